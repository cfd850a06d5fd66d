package app

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// certConfig is a configuration with one app-only group whose certificate
// and key are at the given references; the certificate's attribute is on
// line 17, the key's on line 18.
func certConfig(t *testing.T, vaultAddr, certRef, keyRef string) string {
	t.Helper()
	return testutil.WriteFile(t, t.TempDir(), "relay.hcl", fmt.Sprintf(`vault {
  address = %q
  auth "token" { token = %q }
}
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "m365" {
  preset    = "microsoft"
  token_url = "https://login.example.com/tenant/oauth2/v2.0/token"
}
account_group "apps" {
  provider           = "m365"
  flow               = "client_credentials"
  client_id          = "00000000-0000-0000-0000-00000000000a"
  client_certificate = %q
  client_private_key = %q
  account "scans@example.com" {}
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`, vaultAddr, testutil.VaultRootToken, certRef, keyRef))
}

func TestCheckClientCertificate(t *testing.T) {
	vs := testutil.StartVault(t)
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(o devsandbox.AppCertificateOptions) *devsandbox.AppCertificate {
		c, err := ca.IssueAppCertificate(o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	year := 365 * 24 * time.Hour
	good := issue(devsandbox.AppCertificateOptions{NotAfter: time.Now().Add(year)})
	chained := issue(devsandbox.AppCertificateOptions{Chain: true, PKCS1: true, NotAfter: time.Now().Add(year)})
	soon := issue(devsandbox.AppCertificateOptions{NotAfter: time.Now().Add(10 * 24 * time.Hour)})
	expired := issue(devsandbox.AppCertificateOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	small := issue(devsandbox.AppCertificateOptions{Bits: 1024, NotAfter: time.Now().Add(year)})
	other := issue(devsandbox.AppCertificateOptions{})
	var keys []string
	for _, c := range []*devsandbox.AppCertificate{good, chained, soon, expired, small, other} {
		keys = append(keys, c.KeyPEM, strings.Split(c.KeyPEM, "\n")[1])
	}
	for i, tc := range []struct {
		name      string
		cert, key string
		code      int
		line      int    // of the diagnostic; 0: none
		want      string // the diagnostic after file:line:col
	}{
		{name: "valid for a year", cert: good.CertPEM, key: good.KeyPEM},
		{name: "chain, PKCS#1 key", cert: chained.CertPEM, key: chained.KeyPEM},
		{name: "expires in 10 days", cert: soon.CertPEM, key: soon.KeyPEM, line: 17,
			want: `warning: Client certificate expires soon: account group "apps": the client certificate expires on`},
		{name: "expired", cert: expired.CertPEM, key: expired.KeyPEM, code: 1, line: 17,
			want: `Client certificate not valid: account group "apps": the client certificate expired on`},
		{name: "key of another certificate", cert: good.CertPEM, key: other.KeyPEM, code: 1, line: 18,
			want: `Invalid client certificate: account group "apps": the client private key does not belong to the client certificate`},
		{name: "1024-bit key", cert: small.CertPEM, key: small.KeyPEM, code: 1, line: 18,
			want: "the client private key has 1024 bits; certificate credentials need an RSA key of at least 2048 bits"},
		{name: "key where the certificate goes", cert: good.KeyPEM, key: good.KeyPEM, code: 1, line: 17,
			want: "Invalid client certificate: account group \"apps\": the client certificate holds no PEM CERTIFICATE block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("oauthrelay/app-%d", i)
			vs.Put(path, map[string]any{"cert": tc.cert, "key": tc.key})
			cfg := certConfig(t, vs.Addr, "vault://secret/"+path+"#cert", "vault://secret/"+path+"#key")
			if code, out, errOut := run(t, "", "validate", "-config", cfg); code != 0 {
				t.Fatalf("validate: exit %d\n%s%s", code, out, errOut)
			}
			code, out, errOut := run(t, "", "check", "-config", cfg)
			if code != tc.code {
				t.Fatalf("check: exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if tc.line == 0 {
				if strings.Contains(errOut, "certificate") {
					t.Errorf("unexpected output about the certificate:\n%s", errOut)
				}
			} else if re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(fmt.Sprintf("%s:%d:", cfg, tc.line)) + `\d+: .*` + regexp.QuoteMeta(tc.want)); !re.MatchString(errOut) {
				t.Errorf("check output lacks %s:%d:…%s:\nstderr: %s\nstdout: %s", cfg, tc.line, tc.want, errOut, out)
			}
			testutil.AssertNoSecrets(t, "check output", out+errOut, keys)
		})
	}
}

// TestAuthorizeWithClientCertificate: `account authorize` authenticates
// a certificate-only application with client assertions.
func TestAuthorizeWithClientCertificate(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	app, err := sb.CA.IssueAppCertificate(devsandbox.AppCertificateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb.Tokens.AddClientCertificate("entra-app", app.Certificate)
	dir := t.TempDir()
	certFile := testutil.WriteFile(t, dir, "app.crt", app.CertPEM)
	keyFile := testutil.WriteFile(t, dir, "app.key", app.KeyPEM)
	rtFile := dir + "/owner.rt"
	cfg := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "sandbox" {
  preset          = "custom"
  token_url       = %q
  device_code_url = %q
  smtp_address    = %q
  ca_file         = %q
  scopes          = ["https://outlook.office.com/SMTP.Send", "offline_access"]
}
account_group "g" {
  provider           = "sandbox"
  client_id          = "entra-app"
  client_certificate = "file://%s"
  client_private_key = "file://%s"
  account "owner@example.com" { refresh_token = "file://%s" }
}
`, sb.Tokens.URL, sb.Tokens.DeviceCodeURL(), sb.SMTP.Addr, testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM)), certFile, keyFile, rtFile))
	out, done := runAsync(t, "account", "authorize", "-config", cfg, "owner@example.com")
	m := waitOutput(t, out, regexp.MustCompile(`enter the code (\w+)`))
	// Approve once the first poll was refused as pending, so that the
	// command polls again, with a new assertion.
	testutil.WaitFor(t, 10*time.Second, "a pending poll", func() bool { return sb.Tokens.TotalRequests() >= 1 })
	if !sb.Tokens.ApproveDevice(m[1], "owner@example.com") {
		t.Fatalf("code %s unknown to the provider", m[1])
	}
	if code := waitExit(t, done); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rt, err := os.ReadFile(rtFile)
	if err != nil || !sb.Tokens.RefreshTokenValid(strings.TrimSpace(string(rt))) {
		t.Fatalf("refresh token file: %q, %v", rt, err)
	}
	if got := sb.Tokens.GrantsWith(devsandbox.CertificateThumbprint(app.Certificate)); got != 1 {
		t.Errorf("grants with the certificate = %d, want 1", got)
	}
	testutil.AssertNoSecrets(t, "output", out.String(), []string{app.KeyPEM, strings.Split(app.KeyPEM, "\n")[1], "eyJhbGciOiJSUzI1NiI"})
}
