package config_test

import (
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

func TestAdminBlock(t *testing.T) {
	const snippet = `admin {
  admin_token = "env://ADMIN_TOKEN"
  read_token  = "file:///etc/oauthrelay/read-token"
}
`
	_, loaded := loadSnippet(t, snippet)
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("diagnostics: %v", loaded.Diagnostics)
	}
	a := loaded.Config.Admin
	if a == nil {
		t.Fatal("Admin is nil")
	}
	if a.Address != config.DefaultAdminAddress || a.TLS() || a.AllowPlaintext {
		t.Errorf("admin = %+v, want the loopback default without TLS", a)
	}
	if a.AdminToken.String() != "env://ADMIN_TOKEN" || a.ReadToken.String() != "file:///etc/oauthrelay/read-token" {
		t.Errorf("tokens = %s, %s", a.AdminToken, a.ReadToken)
	}
	refs := map[string]bool{}
	for _, r := range loaded.Config.SecretRefs() {
		refs[r.String()] = true
	}
	if !refs["env://ADMIN_TOKEN"] || !refs["file:///etc/oauthrelay/read-token"] {
		t.Errorf("SecretRefs() lacks the admin tokens: %v", refs)
	}

	_, named := loadSnippet(t, `admin {
  admin_token = "env://ADMIN_TOKEN"
  hostnames   = ["Relay.Example.COM.", "relay"]
}
`)
	if named.Diagnostics.HasErrors() {
		t.Fatalf("diagnostics: %v", named.Diagnostics)
	}
	if got := named.Config.Admin.Hostnames; !slices.Equal(got, []string{"relay.example.com", "relay"}) {
		t.Errorf("Hostnames = %q, want lower case without the trailing dot", got)
	}

	_, none := loadSnippet(t, "")
	if none.Config.Admin != nil {
		t.Errorf("no admin block: Admin = %+v, want nil", none.Config.Admin)
	}
}

func TestAdminBlockTLS(t *testing.T) {
	const snippet = `admin {
  address     = "0.0.0.0:8443"
  admin_token = "env://ADMIN_TOKEN"
  tls_cert    = "env://ADMIN_CERT"
  tls_key     = "env://ADMIN_KEY"
}
`
	_, loaded := loadSnippet(t, snippet)
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("diagnostics: %v", loaded.Diagnostics)
	}
	if a := loaded.Config.Admin; !a.TLS() || a.Address != "0.0.0.0:8443" {
		t.Errorf("admin = %+v, want TLS on 0.0.0.0:8443", a)
	}
}

func TestAdminBlockErrors(t *testing.T) {
	cases := []struct {
		name    string
		snippet string
		want    []at
	}{
		{"no token", `admin {
  address = "127.0.0.1:8080"
}
`, []at{{1, "admin", "Missing admin token"}}},
		{"short literal", `admin {
  admin_token = "short"
}
`, []at{{2, `"short"`, "Admin token too short"}}},
		{"same literal twice", `admin {
  read_token  = "0123456789abcdef0123"
  admin_token = "0123456789abcdef0123"
}
`, []at{{2, `"0123456789abcdef0123"`, "Same read and admin token"}}},
		{"off loopback in clear", `admin {
  address     = "0.0.0.0:8080"
  admin_token = "env://T"
}
`, []at{{2, `"0.0.0.0:8080"`, "Console off loopback without TLS"}}},
		{"files and refs", `admin {
  admin_token   = "env://T"
  tls_cert_file = "/etc/c.pem"
  tls_key_file  = "/etc/k.pem"
  tls_cert      = "env://C"
  tls_key       = "env://K"
}
`, []at{{5, `"env://C"`, "Conflicting TLS certificate settings"}}},
		{"cert without key", `admin {
  admin_token = "env://T"
  tls_cert    = "env://C"
}
`, []at{{1, "admin", "Missing TLS certificate"}}},
		{"bad address", `admin {
  address     = "localhost"
  admin_token = "env://T"
}
`, []at{{2, `"localhost"`, "Invalid address"}}},
		{"bad reference", `admin {
  admin_token = "valut://secret/x#y"
}
`, []at{{2, `"valut://secret/x#y"`, "Invalid secret reference"}}},
		{"unknown attribute", `admin {
  admin_token = "env://T"
  token       = "env://U"
}
`, []at{{3, "token", "Unsupported argument"}}},
		{"bad host name", `admin {
  admin_token = "env://T"
  hostnames   = ["relay.example.com", "relay.example.com:8080"]
}
`, []at{{3, `"relay.example.com:8080"`, "Invalid console host name"}}},
		{"host name with a scheme", `admin {
  admin_token = "env://T"
  hostnames   = ["https://relay"]
}
`, []at{{3, `"https://relay"`, "Invalid console host name"}}},
		{"two blocks", `admin {
  admin_token = "env://T"
}
admin {
  admin_token = "env://T"
}
`, []at{{4, "admin", "Duplicate admin block"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, loaded := loadSnippet(t, tc.snippet)
			wantDiagnostics(t, path, tc.snippet, loaded.Diagnostics, hcl.DiagError, tc.want)
		})
	}
}

func TestAdminPlaintextOptIn(t *testing.T) {
	const snippet = `admin {
  address         = "10.0.0.5:8080"
  admin_token     = "0123456789abcdef0123"
  allow_plaintext = true
}
`
	path, loaded := loadSnippet(t, snippet)
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("diagnostics: %v", loaded.Diagnostics)
	}
	wantDiagnostics(t, path, snippet, loaded.Diagnostics, hcl.DiagWarning, []at{{3, `"0123456789abcdef0123"`, "Token in the configuration"}})
}
