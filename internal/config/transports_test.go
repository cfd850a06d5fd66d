package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const listenerOnly = `listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
`

// loadText loads one configuration file written from text.
func loadText(t *testing.T, text string) config.Loaded {
	t.Helper()
	return config.Load(testutil.WriteFile(t, t.TempDir(), "relay.hcl", text), config.Overrides{})
}

// wantDiag checks that diags hold a diagnostic of severity sev whose
// summary or detail contains text, at the line of the first line of the
// configuration that starts with at.
func wantDiag(t *testing.T, diags hcl.Diagnostics, text, cfgText, at string, sev hcl.DiagnosticSeverity) {
	t.Helper()
	line := lineOf(t, cfgText, at)
	for _, d := range diags {
		if d.Severity == sev && (strings.Contains(d.Summary, text) || strings.Contains(d.Detail, text)) && d.Subject != nil && d.Subject.Start.Line == line {
			return
		}
	}
	t.Errorf("no diagnostic %q at line %d (%q); got %v", text, line, at, diags)
}

func TestProviderTransport(t *testing.T) {
	text := listenerOnly + `provider "m365" {
  preset    = "microsoft"
  tenant    = "contoso.onmicrosoft.com"
  transport = "graph"
}
provider "m365smtp" {
  preset = "microsoft"
  tenant = "contoso.onmicrosoft.com"
}
provider "gws" {
  preset        = "google"
  transport     = "gmail_api"
  gmail_api_url = "http://127.0.0.1:8443/"
}
provider "lab" {
  preset    = "custom"
  token_url = "https://login.example.net/token"
  transport = "graph"
  graph_url = "https://graph.example.net"
}
account_group "app" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "id"
  client_secret = "s"
  account "a@contoso.com" { }
}
account_group "user" {
  provider  = "m365"
  client_id = "id"
  account "u@contoso.com" { refresh_token = "rt" }
}
account_group "smtp" {
  provider      = "m365smtp"
  flow          = "client_credentials"
  client_id     = "id"
  client_secret = "s"
  account "s@contoso.com" { }
  client "c" { password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE." }
}
`
	loaded := loadText(t, text)
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	type view struct {
		Transport, GraphURL, GmailAPIURL string
		MaxConnections                   int
	}
	got := map[string]view{}
	for name, p := range loaded.Config.Providers {
		got[name] = view{p.Transport, p.GraphURL, p.GmailAPIURL, p.Pool.MaxConnections}
	}
	want := map[string]view{
		"m365":     {config.TransportGraph, config.DefaultGraphURL, "", 4},
		"m365smtp": {config.TransportSMTP, "", "", 3},
		"gws":      {config.TransportGmailAPI, "", "http://127.0.0.1:8443", 2},
		"lab":      {config.TransportGraph, "https://graph.example.net", "", 4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("providers (-want +got):\n%s", diff)
	}
	scopes := map[string][]string{}
	for _, g := range loaded.Config.Groups {
		scopes[g.Name] = g.Scopes
	}
	wantScopes := map[string][]string{
		"app":  {config.GraphAppOnlyScope},
		"user": {config.GraphDelegatedScope, "offline_access"},
		"smtp": {config.MicrosoftAppOnlyScope},
	}
	if diff := cmp.Diff(wantScopes, scopes); diff != "" {
		t.Errorf("scopes (-want +got):\n%s", diff)
	}
}

func TestProviderTransportErrors(t *testing.T) {
	tests := []struct {
		name, provider, text, at string
		sev                      hcl.DiagnosticSeverity
	}{
		{"unknown transport", `preset = "microsoft"
  tenant = "t"
  transport = "rest"`, `transport must be one of`, `  transport = "rest"`, hcl.DiagError},
		{"graph for google", `preset = "google"
  transport = "graph"`, `whose HTTP transport is "gmail_api"`, `  transport = "graph"`, hcl.DiagError},
		{"gmail_api for microsoft", `preset = "microsoft"
  tenant = "t"
  transport = "gmail_api"`, `whose HTTP transport is "graph"`, `  transport = "gmail_api"`, hcl.DiagError},
		{"graph_url without graph", `preset = "microsoft"
  tenant = "t"
  graph_url = "https://graph.example.net"`, `graph_url only applies`, `  graph_url =`, hcl.DiagError},
		{"plain http graph_url off loopback", `preset = "microsoft"
  tenant = "t"
  transport = "graph"
  graph_url = "http://graph.example.net"`, `graph_url must be an https URL`, `  graph_url =`, hcl.DiagError},
		{"smtp attribute with graph", `preset = "microsoft"
  tenant = "t"
  transport = "graph"
  smtp_address = "smtp.example.net:587"`, `applies to transport = "smtp" only`, `  smtp_address =`, hcl.DiagWarning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := listenerOnly + "provider \"p\" {\n  " + tt.provider + "\n}\n"
			loaded := loadText(t, text)
			wantDiag(t, loaded.Diagnostics, tt.text, text, tt.at, tt.sev)
		})
	}
}

const domainConfig = listenerOnly + `provider "m365" {
  preset    = "microsoft"
  tenant    = "contoso.onmicrosoft.com"
  transport = "graph"
}
account_group "app" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "id"
  client_secret = "s"
  account "*@Contoso.com" { max_mailboxes = 50 }
  account "ceo@contoso.com" { rate_limit_per_minute = 5 }
  client "erp" {
    password_hash   = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
    allowed_senders = ["*@contoso.com"]
  }
  client "scanner" {
    networks        = ["10.20.0.0/24"]
    allowed_senders = ["scans@contoso.com"]
    send_as         = "scans@contoso.com"
  }
  client "all" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`

func TestDomainAccounts(t *testing.T) {
	loaded := loadText(t, domainConfig)
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	g := loaded.Config.Groups[0]
	wild := g.Accounts[0]
	if wild.Address != "*@contoso.com" || wild.Domain != "contoso.com" || !wild.IsDomain() || wild.MaxMailboxes != 50 {
		t.Errorf("domain account = %+v", wild)
	}
	for addr, want := range map[string]string{
		"ceo@contoso.com":    "ceo@contoso.com",
		"anyone@contoso.com": "*@contoso.com",
		"a@sub.contoso.com":  "",
		"a@contoso.com.evil": "",
		"*@contoso.com":      "*@contoso.com",
	} {
		got := ""
		if a := g.Account(addr); a != nil {
			got = a.Address
		}
		if got != want {
			t.Errorf("Account(%q) = %q, want %q", addr, got, want)
		}
	}
	clients := map[string]*config.Client{}
	for _, c := range g.Clients {
		clients[c.Name] = c
	}
	for _, tt := range []struct {
		client, addr string
		want         bool
	}{
		{"erp", "billing@contoso.com", true},
		{"erp", "billing@other.com", false},
		{"erp", "*@contoso.com", false},
		{"scanner", "scans@contoso.com", true},
		{"scanner", "billing@contoso.com", false},
		{"all", "ceo@contoso.com", true},
		{"all", "x@contoso.com", true},
	} {
		if got := clients[tt.client].MaySendAs(tt.addr); got != tt.want {
			t.Errorf("%s.MaySendAs(%q) = %v, want %v", tt.client, tt.addr, got, tt.want)
		}
	}
	if clients["scanner"].SendAs != "scans@contoso.com" {
		t.Errorf("send_as = %q", clients["scanner"].SendAs)
	}
}

func TestDomainAccountErrors(t *testing.T) {
	tests := []struct{ name, group, text, at string }{
		{"refresh token flow", `client_id = "id"
  account "*@contoso.com" { }`, `A refresh token belongs to one mailbox`, `  account "*@contoso.com"`},
		{"bad domain", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "*@" { }`, `nor a domain-wide account`, `  account "*@"`},
		{"subdomain wildcard", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "*@*.contoso.com" { }`, `nor a domain-wide account`, `  account "*@*.contoso.com"`},
		{"max_mailboxes on a mailbox", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "a@contoso.com" { max_mailboxes = 3 }`, `max_mailboxes only applies`, `  account "a@contoso.com"`},
		{"max_mailboxes zero", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "*@contoso.com" { max_mailboxes = 0 }`, `max_mailboxes must be at least 1`, `  account "*@contoso.com"`},
		{"sender outside the domain", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "*@contoso.com" { }
  client "c" {
    password_hash   = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
    allowed_senders = ["*@fabrikam.com"]
  }`, `not an account of group`, `    allowed_senders =`},
		{"send_as outside allowed domain", `flow = "client_credentials"
  client_id = "id"
  client_secret = "s"
  account "*@contoso.com" { }
  account "x@fabrikam.com" { }
  client "c" {
    networks        = ["10.1.0.0/24"]
    allowed_senders = ["*@contoso.com"]
    send_as         = "x@fabrikam.com"
  }`, `not among its allowed_senders`, `    send_as`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := listenerOnly + `provider "m365" {
  preset = "microsoft"
  tenant = "t"
}
account_group "g" {
  provider = "m365"
  ` + tt.group + "\n}\n"
			loaded := loadText(t, text)
			wantDiag(t, loaded.Diagnostics, tt.text, text, tt.at, hcl.DiagError)
		})
	}
}
