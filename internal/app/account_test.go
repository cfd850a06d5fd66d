package app

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestAccountTest(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.SMTP.SetStyle(devsandbox.StyleMicrosoft)
	sb.Tokens.AddClient("app", "app-secret-value")
	good := sb.Tokens.IssueRefreshToken("app", "good@example.com", config.MicrosoftSMTPScope)
	revoked := sb.Tokens.IssueRefreshToken("app", "revoked@example.com", config.MicrosoftSMTPScope)
	sb.Tokens.RevokeRefreshToken(revoked)
	disabled := sb.Tokens.IssueRefreshToken("app", "disabled@example.com", config.MicrosoftSMTPScope)
	sb.SMTP.DisableSMTPAuth("disabled@example.com")
	dir := t.TempDir()
	ca := testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	write := func(name, caLine string) string {
		return testutil.WriteFile(t, dir, name, fmt.Sprintf(`
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  %s
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "app"
  client_secret = "app-secret-value"
  account "good@example.com" { refresh_token = %q }
  account "revoked@example.com" { refresh_token = %q }
  account "disabled@example.com" { refresh_token = %q }
}
`, sb.Tokens.URL, sb.SMTP.Addr, caLine, good, revoked, disabled))
	}
	cfg := write("relay.hcl", fmt.Sprintf("ca_file = %q", ca))
	untrusted := write("untrusted.hcl", "")

	tests := []struct {
		name, config, account string
		code                  int
		want                  []string
	}{
		{"working account", cfg, "good@example.com", 0, []string{"ok   token", "ok   auth", "OK: the relay can send as good@example.com"}},
		{"revoked refresh token", cfg, "revoked@example.com", 1, []string{"FAIL token", "invalid_grant", "re-authorise"}},
		{"SMTP AUTH disabled", cfg, "disabled@example.com", 1, []string{"ok   connect", "FAIL auth", "5.7.139", "Set-CASMailbox"}},
		{"untrusted certificate", untrusted, "good@example.com", 1, []string{"FAIL token", "ca_file"}},
		{"unknown account", cfg, "nobody@example.com", 1, []string{"FAIL account", "good@example.com"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, "", "account", "test", "-config", tc.config, tc.account)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "app-secret-value") || strings.Contains(out, good) {
				t.Errorf("output reveals a secret:\n%s", out)
			}
		})
	}
	if n := len(sb.SMTP.Messages()); n != 0 {
		t.Errorf("account test sent %d messages", n)
	}
}

func TestAccountTestDiagnosesScopeAndClock(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.SMTP.SetStyle(devsandbox.StyleGoogle)
	sb.SMTP.RequireScope(config.GoogleScope)
	sb.Tokens.AddClient("app", "app-secret-value")
	wrongScope := sb.Tokens.IssueRefreshToken("app", "narrow@example.com", "https://www.googleapis.com/auth/gmail.send")
	key, err := sb.Tokens.AddServiceAccount("svc@project.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	keyFile := testutil.WriteFile(t, dir, "sa.json", string(key))
	cfg := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = %q
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "app"
  client_secret = "app-secret-value"
  account "narrow@example.com" { refresh_token = %q }
}
account_group "sa" {
  provider            = "sandbox"
  flow                = "service_account"
  service_account_key = "file://%s"
  account "robot@example.com" {}
}
`, sb.Tokens.URL, sb.SMTP.Addr, ca, wrongScope, keyFile))
	code, out, _ := run(t, "", "account", "test", "-config", cfg, "narrow@example.com")
	if code != 1 || !strings.Contains(out, "FAIL auth") || !strings.Contains(out, "gmail.send does not work") {
		t.Errorf("wrong scope: exit %d\n%s", code, out)
	}
	sb.Tokens.SetClockOffset(3 * time.Hour) // this host's clock is 3 hours behind
	code, out, _ = run(t, "", "account", "test", "-config", cfg, "robot@example.com")
	if code != 1 || !strings.Contains(out, "FAIL token") || !strings.Contains(out, "clock") {
		t.Errorf("clock skew: exit %d\n%s", code, out)
	}
}

// account test checks an HTTP transport's account without sending: a
// token, then a message without recipients that the provider refuses
// after checking the token and the mailbox.
func TestAccountTestHTTPTransports(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient("graph-app", "graph-app-secret")
	key, err := sb.Tokens.AddServiceAccount("svc@project.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	sb.Gmail.FailAlways("policy@gws.test", &devsandbox.GmailDomainPolicy)
	sb.Graph.FailAlways("denied@contoso.test", &devsandbox.GraphAccessDenied)
	dir := t.TempDir()
	ca := testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	keyFile := testutil.WriteFile(t, dir, "sa.json", string(key))
	cfg := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "gmail" {
  preset        = "custom"
  token_url     = %q
  transport     = "gmail_api"
  gmail_api_url = %q
  ca_file       = %q
  scopes        = [%q]
}
provider "graph" {
  preset    = "custom"
  token_url = %q
  transport = "graph"
  graph_url = %q
  ca_file   = %q
  scopes    = [%q]
}
account_group "gws" {
  provider            = "gmail"
  flow                = "service_account"
  service_account_key = "file://%s"
  account "*@gws.test" {}
}
account_group "m365" {
  provider      = "graph"
  flow          = "client_credentials"
  client_id     = "graph-app"
  client_secret = "graph-app-secret"
  account "*@contoso.test" {}
}
`, sb.Tokens.URL, sb.Gmail.URL, ca, config.GoogleScope, sb.Tokens.URL, sb.Graph.URL, ca, config.GraphAppOnlyScope, keyFile))
	tests := []struct {
		name, account string
		code          int
		want          []string
	}{
		{"Gmail API mailbox of a domain-wide account", "anyone@gws.test", 0, []string{"ok   token", "ok   gmail_api", "nothing was sent", "OK: the relay can send as anyone@gws.test"}},
		{"Gmail API disabled by the domain's policy", "policy@gws.test", 1, []string{"ok   token", "FAIL gmail_api", "domainPolicy", "Admin console"}},
		{"Graph mailbox", "scans@contoso.test", 0, []string{"ok   token", "ok   graph", "OK: the relay can send as scans@contoso.test"}},
		{"Graph access denied", "denied@contoso.test", 1, []string{"FAIL graph", "ErrorAccessDenied", "access policy"}},
		{"the pattern itself is no mailbox", "*@gws.test", 1, []string{"FAIL account"}},
		{"outside the domain", "x@other.test", 1, []string{"FAIL account"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, "", "account", "test", "-config", cfg, tc.account)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "graph-app-secret") {
				t.Errorf("output reveals a secret:\n%s", out)
			}
		})
	}
	if n := len(sb.Gmail.Messages()) + len(sb.Graph.Messages()); n != 0 {
		t.Errorf("account test sent %d messages", n)
	}
}
