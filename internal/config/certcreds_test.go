package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// certProviders are the providers the certificate snippets refer to.
const certProviders = `provider "m365" {
  preset = "microsoft"
  tenant = "contoso.onmicrosoft.com"
}
provider "idp" {
  preset       = "custom"
  token_url    = "https://idp.example.com/token"
  smtp_address = "smtp.example.com:587"
}
`

// certGroup is an account group of the snippets: provider, flow and
// credential lines, then one account (with a refresh token when the flow
// needs one).
func certGroup(provider, flow, lines string) string {
	account := `account "entra@example.com" {}`
	if flow == config.FlowRefreshToken {
		account = `account "entra@example.com" { refresh_token = "env://ENTRA_RT" }`
	}
	return `account_group "entra" {
  provider  = "` + provider + `"
  flow      = "` + flow + `"
  client_id = "00000000-0000-0000-0000-000000000001"
` + lines + `
  ` + account + `
}
`
}

func TestClientCertificateAccepted(t *testing.T) {
	for _, tc := range []struct{ name, provider, flow string }{
		{"microsoft app-only", "m365", config.FlowClientCredentials},
		{"microsoft delegated", "m365", config.FlowRefreshToken},
		{"custom app-only", "idp", config.FlowClientCredentials},
		{"custom delegated", "idp", config.FlowRefreshToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snippet := certProviders + certGroup(tc.provider, tc.flow, `  client_certificate = "vault://secret/oauthrelay/m365#cert"
  client_private_key = "file:///etc/oauthrelay/m365.key"`)
			_, loaded := loadSnippet(t, vaultBlock+snippet)
			if loaded.Diagnostics.HasErrors() {
				t.Fatalf("diagnostics: %v", loaded.Diagnostics)
			}
			var g *config.AccountGroup
			for _, cand := range loaded.Config.Groups {
				if cand.Name == "entra" {
					g = cand
				}
			}
			if g == nil {
				t.Fatal("group entra missing")
			}
			if got, want := g.ClientCertificate.String(), "vault://secret/oauthrelay/m365#cert"; got != want {
				t.Errorf("ClientCertificate = %s, want %s", got, want)
			}
			if got, want := g.ClientPrivateKey.String(), "file:///etc/oauthrelay/m365.key"; got != want {
				t.Errorf("ClientPrivateKey = %s, want %s", got, want)
			}
			if g.ClientSecret.IsSet() {
				t.Error("ClientSecret set without client_secret")
			}
			var refs []string
			for _, r := range g.CredentialRefs() {
				refs = append(refs, r.String())
			}
			if diff := cmp.Diff([]string{"vault://secret/oauthrelay/m365#cert", "file:///etc/oauthrelay/m365.key"}, refs); diff != "" {
				t.Errorf("CredentialRefs (-want +got):\n%s", diff)
			}
			all := map[string]bool{}
			for _, r := range loaded.Config.SecretRefs() {
				all[r.String()] = true
			}
			for _, r := range refs {
				if !all[r] {
					t.Errorf("Config.SecretRefs lacks %s: it would not be resolved at start", r)
				}
			}
		})
	}
}

func TestClientCertificateErrors(t *testing.T) {
	// Lines of the snippet: the providers take 9, the group header 4 more,
	// so the group's first credential line is line 14.
	const first = 14
	for _, tc := range []struct {
		name, provider, flow, lines string
		want                        []at
		detail                      string // in the first diagnostic's detail
	}{
		{
			name: "certificate without key", provider: "m365", flow: config.FlowClientCredentials,
			lines:  `  client_certificate = "env://M365_CERT"`,
			want:   []at{{first, `"env://M365`, "Missing client_private_key"}},
			detail: "sets client_certificate but not client_private_key",
		},
		{
			name: "key without certificate", provider: "m365", flow: config.FlowRefreshToken,
			lines:  `  client_private_key = "env://M365_KEY"`,
			want:   []at{{first, `"env://M365`, "Missing client_certificate"}},
			detail: "sets client_private_key but not client_certificate",
		},
		{
			name: "certificate and client secret", provider: "m365", flow: config.FlowClientCredentials,
			lines: `  client_secret      = "env://M365_SECRET"
  client_certificate = "env://M365_CERT"
  client_private_key = "env://M365_KEY"`,
			want:   []at{{first, `"env://`, "Conflicting credentials"}},
			detail: "sets both client_secret and a client certificate",
		},
		{
			name: "google refuses client assertions", provider: "workspace", flow: config.FlowRefreshToken,
			lines: `  client_certificate = "env://M365_CERT"
  client_private_key = "env://M365_KEY"`,
			want:   []at{{first, `"env://M365`, "Certificate credentials not supported by provider"}},
			detail: "Google OAuth clients authenticate with client_secret only",
		},
		{
			name: "google, key only", provider: "workspace", flow: config.FlowRefreshToken,
			lines: `  client_private_key = "env://M365_KEY"`,
			want: []at{
				{first, `"env://M365`, "Missing client_certificate"},
				{first, `"env://M365`, "Certificate credentials not supported by provider"},
			},
			detail: "sets client_private_key but not client_certificate",
		},
		{
			name: "app-only without any credential", provider: "m365", flow: config.FlowClientCredentials,
			want:   []at{{first - 4, "account_group", "Missing required argument"}},
			detail: "needs client_secret (or client_certificate with client_private_key)",
		},
		{
			name: "bad reference", provider: "m365", flow: config.FlowClientCredentials,
			lines: `  client_certificate = "valut://secret/oauthrelay/m365#cert"
  client_private_key = "env://M365_KEY"`,
			want:   []at{{first, `"valut://`, "Invalid secret reference"}},
			detail: "client_certificate: unknown secret reference scheme",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := certProviders + certGroup(tc.provider, tc.flow, tc.lines)
			path, loaded := loadSnippet(t, src)
			wantDiagnostics(t, path, src, loaded.Diagnostics, hcl.DiagError, tc.want)
			if loaded.Config != nil {
				t.Error("Load returned a config despite errors")
			}
			for _, d := range loaded.Diagnostics {
				if d.Summary == tc.want[0].summary {
					if !strings.Contains(d.Detail, tc.detail) {
						t.Errorf("detail %q does not contain %q", d.Detail, tc.detail)
					}
					return
				}
			}
		})
	}
}

func TestClientCertificateWithServiceAccountFlow(t *testing.T) {
	src := `provider "custom" {
  preset       = "custom"
  token_url    = "https://idp.example.com/token"
  smtp_address = "smtp.example.com:587"
}
account_group "sa" {
  provider            = "custom"
  flow                = "service_account"
  service_account_key = "env://SA_KEY"
  client_certificate  = "env://SA_CERT"
  client_private_key  = "env://SA_KEY_PEM"
  account "sa@example.com" {}
}
`
	path, loaded := loadSnippet(t, src)
	wantDiagnostics(t, path, src, loaded.Diagnostics, hcl.DiagError, []at{
		{10, `"env://SA_CERT"`, "Unexpected attribute"},
		{11, `"env://SA_KEY_PEM"`, "Unexpected attribute"},
	})
}
