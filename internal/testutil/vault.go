package testutil

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// VaultRootToken is the fixed root token of test Vault servers.
const VaultRootToken = "oauthrelay-test-root"

// VaultServer is a real `vault server -dev` on 127.0.0.1.
type VaultServer struct {
	Addr   string // http://127.0.0.1:port
	Client *vault.Client
	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	port   string
	log    *LogBuffer
}

// vaultBinary finds the server built by `make vault`. Tests fail, never
// skip, when it is missing: CI must run them.
func vaultBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OAUTHRELAY_VAULT_BIN"); p != "" {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "vault-dev")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("vault-dev"); err == nil {
		return p
	}
	t.Fatal("the Vault dev server is missing: run `make vault` (builds $(go env GOPATH)/bin/vault-dev once), or set OAUTHRELAY_VAULT_BIN")
	return ""
}

// StartVault starts a dev server on a free loopback port and stops it when
// the test ends. KV v2 is mounted at secret/.
func StartVault(t testing.TB) *VaultServer {
	t.Helper()
	v := &VaultServer{t: t, log: &LogBuffer{}}
	// The port is free when chosen, but another process can take it
	// before Vault binds it (tests run in parallel): then Vault exits at
	// once, and another port is tried.
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		v.port, v.Addr = port, "http://127.0.0.1:"+port
		if err := v.run(); err == nil {
			break
		} else if attempt == 5 {
			t.Fatalf("vault dev server did not start: %v\n%s", err, v.log.String())
		}
	}
	t.Cleanup(v.Stop)
	cfg := vault.DefaultConfig()
	cfg.Address = v.Addr
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(VaultRootToken)
	v.Client = c
	return v
}

// start runs the server on its port, failing the test if it does not
// become healthy.
func (v *VaultServer) start() {
	v.t.Helper()
	if err := v.run(); err != nil {
		v.t.Fatalf("vault dev server did not become healthy: %v\n%s", err, v.log.String())
	}
}

// run starts the server on v.port and waits until it is healthy; it
// returns an error, the server stopped, when it exits first (a port taken
// meanwhile) or stays unhealthy for a minute.
func (v *VaultServer) run() error {
	v.t.Helper()
	bin := vaultBinary(v.t)
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+VaultRootToken,
		"-dev-listen-address=127.0.0.1:"+v.port,
		"-dev-no-store-token")
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+v.t.TempDir())
	cmd.Stdout, cmd.Stderr = v.log, v.log
	if err := cmd.Start(); err != nil {
		v.t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	v.cmd, v.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			v.cmd = nil
			return fmt.Errorf("the server exited (port %s taken?)", v.port)
		default:
		}
		if time.Now().After(deadline) {
			v.Stop()
			return fmt.Errorf("not healthy after a minute: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the server's health endpoint
	}
}

// Stop kills the server (its in-memory data is lost).
func (v *VaultServer) Stop() {
	if v.cmd == nil {
		return
	}
	_ = v.cmd.Process.Kill()
	<-v.exited
	v.cmd = nil
}

// Restart starts a fresh dev server on the same port and root token; like
// a rebuilt Vault, it holds no data until the test writes some.
func (v *VaultServer) Restart() {
	v.t.Helper()
	v.Stop()
	v.start()
}

// Put writes a KV v2 secret at secret/<path>.
func (v *VaultServer) Put(path string, data map[string]any) int {
	v.t.Helper()
	s, err := v.Client.KVv2("secret").Put(context.Background(), path, data)
	if err != nil {
		v.t.Fatalf("vault put %s: %v", path, err)
	}
	return s.VersionMetadata.Version
}

// EnableAppRole enables AppRole and creates a role for policy with the
// given token TTLs, returning its role ID and a secret ID.
func (v *VaultServer) EnableAppRole(role, policy string, ttl, maxTTL time.Duration) (roleID, secretID string) {
	v.t.Helper()
	if err := v.Client.Sys().EnableAuthWithOptions("approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil && !strings.Contains(err.Error(), "path is already in use") {
		v.t.Fatal(err)
	}
	_, err := v.Client.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": policy,
		"token_ttl":      fmt.Sprintf("%ds", int(ttl.Seconds())),
		"token_max_ttl":  fmt.Sprintf("%ds", int(maxTTL.Seconds())),
	})
	if err != nil {
		v.t.Fatal(err)
	}
	s, err := v.Client.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		v.t.Fatal(err)
	}
	roleID = s.Data["role_id"].(string)
	s, err = v.Client.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		v.t.Fatal(err)
	}
	return roleID, s.Data["secret_id"].(string)
}

// PutPolicy writes an ACL policy.
func (v *VaultServer) PutPolicy(name, hcl string) {
	v.t.Helper()
	if err := v.Client.Sys().PutPolicy(name, hcl); err != nil {
		v.t.Fatal(err)
	}
}

// PolicyToken writes the ACL policy under name and returns a new token
// that has only it.
func (v *VaultServer) PolicyToken(name, hcl string) string {
	v.t.Helper()
	v.PutPolicy(name, hcl)
	s, err := v.Client.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{name}})
	if err != nil {
		v.t.Fatal(err)
	}
	return s.Auth.ClientToken
}
