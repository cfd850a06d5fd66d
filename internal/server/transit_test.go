package server_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const transitKey = "oauthrelay-queue"

// secretsPolicy lets the relay read (and write back) its secrets in the
// harness's Vault layout, and nothing else.
const secretsPolicy = `
path "secret/data/oauthrelay/*"     { capabilities = ["read", "update"] }
path "secret/metadata/oauthrelay/*" { capabilities = ["read"] }
`

// transitVault starts a Vault dev server with the Transit engine at
// transit/ holding the relay's key.
func transitVault(t *testing.T) *testutil.VaultServer {
	t.Helper()
	vs := testutil.StartVault(t)
	if err := vs.Client.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Client.Logical().Write("transit/keys/"+transitKey, nil); err != nil {
		t.Fatal(err)
	}
	return vs
}

// filesContaining returns the files under dir (the database, its -wal and
// -shm files, …) whose bytes contain s.
func filesContaining(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			found = append(found, filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestTransitSealsQueuedBodies: with store { transit { … } }, a queued
// message's body is nowhere in the store's files in clear while it waits
// (its envelope is, which shows that the scan sees what was written), no
// copy of the store opened without Vault can read it, and it reaches the
// provider intact once the provider accepts; the relay's token needs only
// the policy paths the README names.
func TestTransitSealsQueuedBodies(t *testing.T) {
	vs := transitVault(t)
	token := vs.PolicyToken("relay", secretsPolicy+fmt.Sprintf(`
path "transit/datakey/plaintext/%[1]s" { capabilities = ["update"] }
path "transit/decrypt/%[1]s"           { capabilities = ["update"] }
`, transitKey))
	dir := filepath.Join(t.TempDir(), "store")
	h := newHarness(t, harnessOptions{
		vault:     vs,
		vaultAuth: fmt.Sprintf(`auth "token" { token = %q }`, token),
		listenerExtra: `max_connections_per_ip = 0
  delivery = "queue"`,
		// The provider refuses on purpose at first; an open circuit would
		// only postpone the attempts.
		providerExtra: "circuit_failure_threshold = 1000000\n  circuit_min_requests = 1000000",
		extraConfig: fmt.Sprintf(`
store {
  path = %q
  transit { key = %q }
}
queue { retry_schedule = ["1s"] }
`, dir, transitKey),
	})
	marker := "sealed-body-marker-" + strings.ReplaceAll(t.Name(), "/", "-")
	rcpt := "sealed-rcpt-7d41@example.net"
	h.secrets = append(h.secrets, token, testutil.VaultRootToken, marker)
	h.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mailbox busy, try again later"})

	// The marker in every part of a body several times the size of one
	// read, so no stretch of it is stored in clear.
	var body strings.Builder
	body.WriteString("Subject: sealed\r\nMessage-ID: <sealed@client.test>\r\n\r\n")
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&body, "line %03d of the message: %s\r\n", i, marker)
	}
	reply, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{rcpt}, Body: body.String()})
	if err != nil {
		t.Fatal(err)
	}
	id := idFrom(t, queuedIDRE, reply)
	st := openStore(t, dir)
	testutil.WaitFor(t, storeWait, "a refused attempt", func() bool {
		e, err := st.Get(context.Background(), id)
		return err == nil && e.Attempts >= 1
	})

	if files := filesContaining(t, dir, marker); len(files) > 0 {
		t.Errorf("the queued body is readable in %v", files)
	}
	if files := filesContaining(t, dir, rcpt); len(files) == 0 {
		t.Error("the envelope is in no store file either: the scan proves nothing")
	}
	if files := filesContaining(t, dir, "vault:v1:"); len(files) == 0 {
		t.Error("no Transit-wrapped data key in the store")
	}
	if r, err := st.Body(context.Background(), id); err == nil {
		b, rerr := readAll(r)
		if rerr == nil || bytes.Contains(b, []byte(marker)) {
			t.Errorf("a store opened without Vault read the body: %d bytes, %v", len(b), rerr)
		}
	}

	h.sb.SMTP.FailEveryNthData(0, nil)
	testutil.WaitFor(t, storeWait, "the message at the provider", func() bool {
		for _, m := range h.sb.SMTP.Messages() {
			if strings.Join(m.To, ",") == rcpt {
				return true
			}
		}
		return false
	})
	for _, m := range h.sb.SMTP.Messages() {
		if strings.Join(m.To, ",") == rcpt && !bytes.Contains(m.Data, []byte(body.String())) {
			t.Errorf("the delivered message differs from the one sent (%d bytes, sent %d)", len(m.Data), body.Len())
		}
	}
	if files := filesContaining(t, dir, marker); len(files) > 0 {
		t.Errorf("after delivery the body is readable in %v", files)
	}
}

func readAll(r interface {
	Read([]byte) (int, error)
	Close() error
}) ([]byte, error) {
	defer r.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// TestTransitRefusedAtStart: a relay whose Vault token may not use the
// Transit key, or whose key or engine is missing, does not start, and the
// error says what to grant or create; no token reaches the error or the
// logs.
func TestTransitRefusedAtStart(t *testing.T) {
	vs := transitVault(t)
	// The harness's relay runs without a store; each case starts another
	// one from its configuration with a store block and another token.
	h := newHarness(t, harnessOptions{vault: vs})
	noTransit := vs.PolicyToken("no-transit", secretsPolicy)
	dataKeyOnly := vs.PolicyToken("datakey-only", secretsPolicy+`path "transit/datakey/plaintext/`+transitKey+`" { capabilities = ["update"] }`)
	paths := []string{`"update"`, "transit/datakey/plaintext/" + transitKey, "transit/decrypt/" + transitKey}
	tests := []struct {
		name, token, mount, key string
		want                    []string
	}{
		{"no transit policy", noTransit, "transit", transitKey, append([]string{"store transit: transit datakey", "permission denied"}, paths...)},
		{"datakey but no decrypt", dataKeyOnly, "transit", transitKey, append([]string{"store transit: transit decrypt", "permission denied"}, paths...)},
		{"missing key", testutil.VaultRootToken, "transit", "no-such-key", []string{`transit key "no-such-key" not found`, "vault write -f transit/keys/no-such-key"}},
		{"missing engine", testutil.VaultRootToken, "elsewhere", transitKey, []string{`no Transit secrets engine at mount "elsewhere"`, "vault secrets enable -path=elsewhere transit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			text := strings.Replace(h.cfgText, testutil.VaultRootToken, tc.token, 1) +
				fmt.Sprintf("store {\n  path = %q\n  transit {\n    mount = %q\n    key = %q\n  }\n}\n", dir, tc.mount, tc.key)
			path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", text)
			loaded := config.Load(path, config.Overrides{})
			if loaded.Diagnostics.HasErrors() {
				t.Fatalf("config: %v", loaded.Diagnostics)
			}
			logs := &testutil.LogBuffer{}
			rt, err := server.New(context.Background(), loaded.Config, server.Options{Logger: logs.Logger(t), ConfigPath: path})
			if err == nil {
				_ = rt.Shutdown(context.Background())
				t.Fatal("the relay started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			secrets := []string{noTransit, dataKeyOnly, testutil.VaultRootToken}
			testutil.AssertNoSecrets(t, "the error", err.Error(), secrets)
			testutil.AssertNoSecrets(t, "the logs", logs.String(), secrets)
		})
	}
}

// A reload whose Vault login may not use the store's Transit key is
// refused and changes nothing: queued bodies stay readable.
func TestReloadRefusesAVaultLoginWithoutTransit(t *testing.T) {
	vs := transitVault(t)
	tp := fmt.Sprintf("path \"transit/datakey/plaintext/%[1]s\" { capabilities = [\"update\"] }\npath \"transit/decrypt/%[1]s\" { capabilities = [\"update\"] }\n", transitKey)
	with, without := vs.PolicyToken("relay", secretsPolicy+tp), vs.PolicyToken("relay-no-transit", secretsPolicy)
	dir := filepath.Join(t.TempDir(), "store")
	h := newHarness(t, harnessOptions{vault: vs, vaultAuth: fmt.Sprintf(`auth "token" { token = %q }`, with),
		listenerExtra: "max_connections_per_ip = 0\n  delivery = \"queue\"",
		extraConfig:   fmt.Sprintf("store {\n  path = %q\n  transit { key = %q }\n}\n", dir, transitKey)})
	h.secrets = append(h.secrets, with, without)
	h.mustSend(appClient, alice)
	h.rewrite(strings.Replace(h.cfgText, with, without, 1))
	err := h.rt.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "transit") {
		t.Fatalf("reload with a token that may not use the Transit key: %v, want a refusal naming transit", err)
	}
	h.mustSend(appClient, alice) // the running configuration still stores and seals
}
