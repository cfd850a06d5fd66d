package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// authorizeFixture is a sandbox provider and a configuration whose account
// stores its refresh token at ref.
func authorizeFixture(t *testing.T, ref, extra string) (*devsandbox.Sandbox, string) {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient("desktop-app", "desktop-secret")
	dir := t.TempDir()
	ca := testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	cfg := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`%s
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "sandbox" {
  preset          = "custom"
  token_url       = %q
  auth_url        = %q
  device_code_url = %q
  smtp_address    = %q
  ca_file         = %q
  scopes          = ["https://outlook.office.com/SMTP.Send", "offline_access"]
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "desktop-app"
  client_secret = "desktop-secret"
  account "owner@example.com" { refresh_token = %q }
}
`, extra, sb.Tokens.URL, sb.Tokens.AuthURL(), sb.Tokens.DeviceCodeURL(), sb.SMTP.Addr, ca, ref))
	return sb, cfg
}

// runAsync runs the command line in the background and returns its output
// buffer and exit code channel.
func runAsync(t *testing.T, args ...string) (*testutil.LogBuffer, chan int) {
	t.Helper()
	out, errOut := &testutil.LogBuffer{}, &testutil.LogBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(context.Background(), args, IO{Stdin: strings.NewReader(""), Stdout: out, Stderr: errOut})
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
		}
	})
	return out, done
}

func waitOutput(t *testing.T, out *testutil.LogBuffer, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("output never matched %s:\n%s", re, out)
		}
		time.Sleep(20 * time.Millisecond) // polling the command's output
	}
}

func waitExit(t *testing.T, done chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not finish")
		return -1
	}
}

func TestAuthorizeDeviceCodeIntoVault(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/accounts/owner", map[string]any{"note": "kept"})
	sb, cfg := authorizeFixture(t, "vault://secret/oauthrelay/accounts/owner#refresh_token",
		fmt.Sprintf("vault {\n  address = %q\n  auth \"token\" { token = %q }\n}", vs.Addr, testutil.VaultRootToken))
	out, done := runAsync(t, "account", "authorize", "-config", cfg, "owner@example.com")
	m := waitOutput(t, out, regexp.MustCompile(`enter the code (\w+)`))
	if !sb.Tokens.ApproveDevice(m[1], "owner@example.com") {
		t.Fatalf("code %s unknown to the provider", m[1])
	}
	if code := waitExit(t, done); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s, err := vs.Client.KVv2("secret").Get(context.Background(), "oauthrelay/accounts/owner")
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := s.Data["refresh_token"].(string)
	if !sb.Tokens.RefreshTokenValid(rt) || s.Data["note"] != "kept" {
		t.Errorf("Vault holds %v", s.Data)
	}
	if strings.Contains(out.String(), rt) {
		t.Error("the refresh token was printed although it went to Vault")
	}
}

func TestAuthorizeBrowserIntoFile(t *testing.T) {
	dir := t.TempDir()
	rtFile := dir + "/owner.rt"
	sb, cfg := authorizeFixture(t, "file://"+rtFile, "")
	sb.Tokens.SetBrowserUser("owner@example.com")
	out, done := runAsync(t, "account", "authorize", "-config", cfg, "-method", "browser", "owner@example.com")
	m := waitOutput(t, out, regexp.MustCompile(`(https://\S+/authorize\?\S+)`))
	if !strings.Contains(m[1], "code_challenge_method=S256") || !strings.Contains(m[1], "access_type=offline") {
		t.Errorf("authorization URL lacks PKCE or offline access: %s", m[1])
	}
	// The "browser": signs in and follows the redirect to the loopback.
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sb.CA.Pool}}}
	resp, err := browser.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("callback answered %d", resp.StatusCode)
	}
	if code := waitExit(t, done); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(rtFile)
	if err != nil {
		t.Fatal(err)
	}
	if rt := strings.TrimSpace(string(b)); !sb.Tokens.RefreshTokenValid(rt) {
		t.Errorf("the file holds %q, not a valid refresh token", rt)
	}
	if st, _ := os.Stat(rtFile); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", st.Mode().Perm())
	}
}

func TestAuthorizeEnvPrints(t *testing.T) {
	sb, cfg := authorizeFixture(t, "env://OWNER_RT", "")
	out, done := runAsync(t, "account", "authorize", "-config", cfg, "owner@example.com")
	m := waitOutput(t, out, regexp.MustCompile(`enter the code (\w+)`))
	sb.Tokens.ApproveDevice(m[1], "owner@example.com")
	if code := waitExit(t, done); code != 0 {
		t.Fatalf("exit %d", code)
	}
	m = waitOutput(t, out, regexp.MustCompile(`export OWNER_RT='(\S+)'`))
	if !sb.Tokens.RefreshTokenValid(m[1]) {
		t.Errorf("printed token is not valid")
	}
}
