package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// checkFixture is a host: a certificate and secrets in files, a Vault
// dev server holding the client secret and a second certificate.
type checkFixture struct {
	dir                        string
	certFile, keyFile, rtFile  string
	otherKeyPEM, keyPEM, vault string
	secrets                    []string // every secret value, for AssertNoSecrets
}

func newCheckFixture(t *testing.T) *checkFixture {
	t.Helper()
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	f := &checkFixture{dir: t.TempDir()}
	f.certFile, f.keyFile = filepath.Join(f.dir, "tls.crt"), filepath.Join(f.dir, "tls.key")
	if err := ca.WriteFiles(f.certFile, f.keyFile, "relay.test"); err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey := filepath.Join(f.dir, "other.crt"), filepath.Join(f.dir, "other.key")
	if err := ca.WriteFiles(otherCert, otherKey, "relay.test"); err != nil {
		t.Fatal(err)
	}
	f.keyPEM, f.otherKeyPEM = readFile(t, f.keyFile), readFile(t, otherKey)
	f.rtFile = testutil.WriteFile(t, f.dir, "a.rt", "refresh-token-in-a-file-7c1e")
	v := testutil.StartVault(t)
	f.vault = v.Addr
	v.Put("oauthrelay/app", map[string]any{"client_secret": "client-secret-in-vault-91d3", "cert": readFile(t, f.certFile), "key": f.keyPEM})
	t.Setenv("CHECK_VAULT_TOKEN", testutil.VaultRootToken)
	f.secrets = []string{"refresh-token-in-a-file-7c1e", "client-secret-in-vault-91d3", testutil.VaultRootToken, f.keyPEM, f.otherKeyPEM, keyLine(f.keyPEM)}
	return f
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// keyLine is the first base64 line of a PEM key.
func keyLine(p string) string { return strings.Split(p, "\n")[1] }

// config writes a configuration; edit replaces text of the good one.
func (f *checkFixture) config(t *testing.T, listen, telemetry string, edit ...string) string {
	t.Helper()
	body := fmt.Sprintf(`telemetry {
  address = %q
}
vault {
  address = %q
  auth "token" {
    token = "env://CHECK_VAULT_TOKEN"
  }
}
listener "files" {
  address       = %q
  tls_cert_file = %q
  tls_key_file  = %q
}
listener "secrets" {
  address  = %q
  tls_mode = "implicit"
  tls_cert = "vault://secret/oauthrelay/app#cert"
  tls_key  = "vault://secret/oauthrelay/app#key"
}
provider "gw" {
  preset  = "google"
  ca_file = %q
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "vault://secret/oauthrelay/app#client_secret"
  account "a@example.com" {
    refresh_token = "file://%s"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`, telemetry, f.vault, listen, f.certFile, f.keyFile, testutil.FreeAddr(t), f.certFile, f.rtFile)
	for i := 0; i+1 < len(edit); i += 2 {
		if !strings.Contains(body, edit[i]) {
			t.Fatalf("fixture has no %q", edit[i])
		}
		body = strings.Replace(body, edit[i], edit[i+1], 1)
	}
	return testutil.WriteFile(t, t.TempDir(), "relay.hcl", body)
}

// busyAddr returns a loopback address something else is listening on.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestCheck: `check` passes on a host where everything resolves, and
// fails, with file:line:col, for each host problem that `validate` (which
// reads nothing but the HCL) lets through and that `run` refuses too.
func TestCheck(t *testing.T) {
	f := newCheckFixture(t)
	good := f.config(t, "127.0.0.1:0", "127.0.0.1:0")
	code, out, errOut := run(t, "", "check", "-config", good)
	if code != 0 || !strings.Contains(out, good+": ready to run (4 secret reference(s) resolved, Vault reached, 2 listener(s) and the telemetry address bound and released, no open relay)") {
		t.Fatalf("good host: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	testutil.AssertNoSecrets(t, "check output", out+errOut, f.secrets)

	t.Setenv("CHECK_ADMIN_TOKEN", "console-admin-token-5e2b90")
	t.Setenv("CHECK_SHORT_TOKEN", "tok-7f3a")
	f.secrets = append(f.secrets, "console-admin-token-5e2b90", "tok-7f3a")
	withConsole := f.config(t, "127.0.0.1:0", "127.0.0.1:0", `provider "gw" {`, consoleBlock(`admin_token = "env://CHECK_ADMIN_TOKEN"`))
	code, out, errOut = run(t, "", "check", "-config", withConsole)
	if code != 0 || !strings.Contains(out, "2 listener(s), the telemetry address and the console (its tokens resolved) bound and released") {
		t.Fatalf("good host with a console: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	testutil.AssertNoSecrets(t, "check output", out+errOut, f.secrets)
	busy := busyAddr(t)
	for _, tc := range []struct {
		name            string
		listen, telem   string
		edit            []string
		wantLine        int    // line of the failure in the configuration
		want            string // text of the failure after file:line:col
		runRefusesEarly bool   // run fails before it logs (host files)
	}{
		{name: "listener port in use", listen: busy, wantLine: 11, want: `Cannot listen: listener "files": listen tcp ` + busy},
		{name: "telemetry port in use", telem: busy, wantLine: 2, want: "Cannot listen: telemetry address: listen tcp " + busy},
		{name: "secret file missing", edit: []string{`refresh_token = "file://`, `refresh_token = "file:///nonexistent`}, wantLine: 30, want: "resolving secrets: file:///nonexistent"},
		{name: "secret missing in Vault", edit: []string{`app#client_secret"`, `app#no_such_field"`}, wantLine: 28, want: `resolving secrets: vault://secret/oauthrelay/app#no_such_field: the secret at vault://secret/oauthrelay/app (version 1) has no field "no_such_field"`},
		{name: "Vault login refused", edit: []string{`"env://CHECK_VAULT_TOKEN"`, `"not-a-vault-token"`}, wantLine: 4, want: "vault login (token): HTTP 403"},
		{name: "listener certificate secret with another key", edit: []string{`app#key"`, `app#client_secret"`}, wantLine: 18, want: `listener "secrets": TLS certificate from vault://secret/oauthrelay/app#cert and vault://secret/oauthrelay/app#client_secret`},
		{name: "certificate file missing", edit: []string{"tls_cert_file = \"" + f.certFile, `tls_cert_file = "/nonexistent.crt`}, wantLine: 12, want: `Cannot load TLS certificate: Listener "files": open /nonexistent.crt`, runRefusesEarly: true},
		{name: "console token too short", edit: []string{`provider "gw" {`, consoleBlock(`admin_token = "env://CHECK_SHORT_TOKEN"`)}, wantLine: 23, want: "admin admin_token (env://CHECK_SHORT_TOKEN) is shorter than 16 characters"},
		{name: "console certificate secret with another key", edit: []string{`provider "gw" {`, consoleBlock(`admin_token = "env://CHECK_ADMIN_TOKEN"
  tls_cert    = "vault://secret/oauthrelay/app#cert"
  tls_key     = "vault://secret/oauthrelay/app#client_secret"`)}, wantLine: 24, want: "the admin block: TLS certificate from vault://secret/oauthrelay/app#cert and vault://secret/oauthrelay/app#client_secret"},
		{name: "CA file missing", edit: []string{"ca_file = \"" + f.certFile, `ca_file = "/nonexistent-ca.pem`}, wantLine: 23, want: "Cannot read CA file: ca_file: open /nonexistent-ca.pem", runRefusesEarly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen, telem := "127.0.0.1:0", "127.0.0.1:0"
			if tc.listen != "" {
				listen = tc.listen
			}
			if tc.telem != "" {
				telem = tc.telem
			}
			path := f.config(t, listen, telem, tc.edit...)
			if code, out, errOut := run(t, "", "validate", "-config", path); code != 0 {
				t.Fatalf("validate must not look at the host: exit %d\n%s%s", code, out, errOut)
			}
			code, out, errOut := run(t, "", "check", "-config", path)
			if code != 1 {
				t.Fatalf("check: exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			prefix := regexp.QuoteMeta(path) + `:\d+:\d+: `
			if tc.wantLine > 0 {
				prefix = regexp.QuoteMeta(fmt.Sprintf("%s:%d:", path, tc.wantLine)) + `\d+: `
			}
			if !regexp.MustCompile(`(?m)^` + prefix + `.*` + regexp.QuoteMeta(tc.want)).MatchString(errOut) {
				t.Errorf("check output lacks %s%s:\n%s", prefix, tc.want, errOut)
			}
			testutil.AssertNoSecrets(t, "check output", out+errOut, f.secrets)
			assertRunRefuses(t, path, tc.want, tc.runRefusesEarly, f.secrets)
		})
	}
}

// consoleBlock is an admin block with the given settings, written before
// the provider block (its first setting is on line 23).
func consoleBlock(settings string) string {
	return "admin {\n  address     = \"127.0.0.1:0\"\n  " + settings + "\n}\nprovider \"gw\" {"
}

// assertRunRefuses runs `run` on a configuration `check` refused: it must
// fail at start for the same reason instead of serving.
func assertRunRefuses(t *testing.T, path, reason string, early bool, secrets []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, stderr := &testutil.LogBuffer{}, &testutil.LogBuffer{}
	code := Main(ctx, []string{"run", "-config", path}, IO{Stdout: stdout, Stderr: stderr})
	if ctx.Err() != nil || code != 1 {
		t.Fatalf("run: exit %d (context %v), want 1 at start\n%s", code, ctx.Err(), stderr)
	}
	got := stderr.String()
	if early && !strings.Contains(got, path+":") {
		t.Errorf("run does not give file:line:col:\n%s", got)
	}
	// run logs its error as a quoted value: compare without quoting.
	if !strings.Contains(strings.ReplaceAll(got, `\"`, `"`), reasonCore(reason)) {
		t.Errorf("run does not refuse for %q:\n%s", reason, got)
	}
	testutil.AssertNoSecrets(t, "run output", stdout.String()+got, secrets)
}

// reasonCore drops check's summary prefixes, which run words differently.
func reasonCore(reason string) string {
	for _, p := range []string{"Cannot listen: ", "telemetry address: ", "resolving secrets: "} {
		reason = strings.TrimPrefix(reason, p)
	}
	return reason
}
