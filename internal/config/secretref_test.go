package config_test

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestParseSecretRefColonRule: a value starting with a known scheme name
// and a colon but no "//" is a mistyped reference, never a literal; other
// values with colons stay literals.
func TestParseSecretRefColonRule(t *testing.T) {
	for _, tc := range []struct {
		value   string
		scheme  config.SecretScheme
		wantErr string // substring of the error; "" = valid
	}{
		{value: "abc:def", scheme: config.SecretLiteral},
		{value: "p@ss:w0rd:with:colons", scheme: config.SecretLiteral},
		{value: "environment:x", scheme: config.SecretLiteral},
		{value: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", scheme: config.SecretLiteral},
		{value: "vault://secret/oauthrelay/app#client_secret", scheme: config.SecretVault},
		{value: "env://SMTP_SECRET", scheme: config.SecretEnv},
		{value: "vault:secret/oauthrelay/app#client_secret", wantErr: `did you mean "vault://secret/oauthrelay/app#client_secret"?`},
		{value: "VAULT:/secret/x#y", wantErr: `did you mean "vault://secret/x#y"?`},
		{value: "Env:SMTP_SECRET", wantErr: `did you mean "env://SMTP_SECRET"?`},
		{value: "file:/etc/oauthrelay/secret", wantErr: `did you mean "file:///etc/oauthrelay/secret"?`},
		{value: "file:etc/oauthrelay/secret", wantErr: `did you mean "file:///etc/oauthrelay/secret"?`},
		// Not a valid reference even with the slashes: the rest is not
		// repeated, since it may be a literal secret.
		{value: "vault:hunter2", wantErr: `did you mean "vault://mount/path#field"?`},
		{value: "env:not a name", wantErr: `did you mean "env://NAME"?`},
		{value: "valut://secret/x#y", wantErr: "unknown secret reference scheme"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			ref, err := config.ParseSecretRef(tc.value, hcl.Range{})
			if tc.wantErr == "" {
				if err != nil || ref.Scheme != tc.scheme {
					t.Fatalf("got %v, %v; want scheme %s", ref, err, tc.scheme)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "not a name") {
				t.Errorf("error repeats the value: %v", err)
			}
		})
	}
}

// TestInvalidPresetSuggests: the single diagnostic of a mistyped preset
// names the intended one.
func TestInvalidPresetSuggests(t *testing.T) {
	for preset, want := range map[string]string{"gmail": `Did you mean "google"?`, "Outlook": `Did you mean "microsoft"?`, "Office-365": `Did you mean "microsoft"?`, "yahoo": ""} {
		t.Run(preset, func(t *testing.T) {
			body := strings.Replace(minimal, `preset = "google"`, `preset = "`+preset+`"`, 1)
			loaded := config.Load(testutil.WriteFile(t, t.TempDir(), "relay.hcl", body), config.Overrides{})
			if len(loaded.Diagnostics) != 1 || loaded.Diagnostics[0].Summary != "Invalid preset" {
				t.Fatalf("want exactly one Invalid preset diagnostic, got %v", loaded.Diagnostics)
			}
			detail := loaded.Diagnostics[0].Detail
			if want != "" && !strings.Contains(detail, want) || want == "" && strings.Contains(detail, "Did you mean") {
				t.Errorf("detail %q, want suggestion %q", detail, want)
			}
		})
	}
}

const minimal = `
listener "sub" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider  = "gw"
  client_id = "id"
  account "a@example.com" {
    refresh_token = "env://A_RT"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`

// TestListenerCertificateAsSecrets: tls_cert and tls_key are secret
// references, listed by SecretRefs so that they are resolved and watched
// like every other secret.
func TestListenerCertificateAsSecrets(t *testing.T) {
	body := strings.Replace(minimal, `tls_mode = "none"`, `tls_mode = "starttls"
  tls_cert = "vault://secret/oauthrelay/tls#cert"
  tls_key  = "file:///etc/oauthrelay/tls.key"`, 1) + `
vault {
  address = "https://vault.example.com:8200"
  auth "token" {
    token = "env://VAULT_TOKEN"
  }
}`
	loaded := config.Load(testutil.WriteFile(t, t.TempDir(), "relay.hcl", body), config.Overrides{})
	if loaded.Config == nil {
		t.Fatalf("diagnostics: %v", loaded.Diagnostics)
	}
	l := loaded.Config.Listeners[0]
	if l.TLSCert.String() != "vault://secret/oauthrelay/tls#cert" || l.TLSKey.String() != "file:///etc/oauthrelay/tls.key" || l.TLSCertFile != "" {
		t.Errorf("listener = %+v", l)
	}
	refs := map[string]bool{}
	for _, r := range loaded.Config.SecretRefs() {
		refs[r.String()] = true
	}
	if !refs["vault://secret/oauthrelay/tls#cert"] || !refs["file:///etc/oauthrelay/tls.key"] {
		t.Errorf("SecretRefs = %v", refs)
	}
	if d := config.CheckHost(loaded.Config); len(d) != 0 {
		t.Errorf("CheckHost reads secret references: %v", d)
	}
}

// TestClientsOptional: the account commands load a configuration that has
// no client yet; everything else refuses it.
func TestClientsOptional(t *testing.T) {
	body := minimal[:strings.Index(minimal, "  client \"app\"")] + "}\n"
	p := testutil.WriteFile(t, t.TempDir(), "relay.hcl", body)
	if d := config.Load(p, config.Overrides{}).Diagnostics; len(d) != 1 || d[0].Summary != "No client can authenticate" {
		t.Errorf("without clients: %v", d)
	}
	if l := config.Load(p, config.Overrides{ClientsOptional: true}); l.Config == nil {
		t.Errorf("ClientsOptional: %v", l.Diagnostics)
	}
}
