package config_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const networksConfig = `listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "literal-secret"
  account "a@example.com" { refresh_token = "rt" }
  account "b@example.com" { refresh_token = "rt" }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
  client "floor" {
    networks        = ["10.20.0.0/16", "2001:db8:20::/48"]
    allowed_senders = ["a@example.com"]
    send_as         = "A@Example.com"
  }
  client "printer" {
    networks = [
      "10.20.7.0/24",
      "10.20.7.9",
      "10.20.7.0/24",
    ]
  }
  client "branch" {
    networks = ["198.18.0.0/15", "203.0.113.7"]
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`

// Clients recognised by their network need no password; overlapping
// networks load with a warning that names both clients and says which one
// a host in the overlap is.
func TestClientNetworks(t *testing.T) {
	path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", networksConfig)
	loaded := config.Load(path, config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("errors: %v", loaded.Diagnostics)
	}
	clients := map[string]*config.Client{}
	for _, c := range loaded.Config.Clients() {
		clients[c.Name] = c
	}
	nets := func(name string) []string {
		var out []string
		for _, n := range clients[name].Networks {
			out = append(out, n.Prefix.String())
		}
		return out
	}
	if diff := cmp.Diff([]string{"10.20.0.0/16", "2001:db8:20::/48"}, nets("floor")); diff != "" {
		t.Errorf("floor networks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.20.7.0/24", "10.20.7.9/32"}, nets("printer")); diff != "" {
		t.Errorf("printer networks (-want +got):\n%s", diff)
	}
	if clients["floor"].SendAs != "a@example.com" || clients["printer"].SendAs != "" {
		t.Errorf("send_as: floor %q, printer %q", clients["floor"].SendAs, clients["printer"].SendAs)
	}
	if clients["printer"].PasswordHash != "" || clients["app"].Networks != nil {
		t.Errorf("printer hash %q, app networks %v", clients["printer"].PasswordHash, clients["app"].Networks)
	}
	if r := clients["printer"].Networks[1].Range; r.Start.Line != lineOf(t, networksConfig, `      "10.20.7.9"`) || r.Start.Column != 7 {
		t.Errorf("network range %v: want the list item's own position", r)
	}
	if diff := cmp.Diff([]string{"a@example.com", "b@example.com"}, clients["printer"].AllowedSenders); diff != "" {
		t.Errorf("a network client's senders default to the group's accounts (-want +got):\n%s", diff)
	}

	type diag struct {
		line             int
		summary, content string
	}
	var got []diag
	for _, d := range loaded.Diagnostics {
		if d.Severity != hcl.DiagWarning {
			t.Errorf("unexpected %s", config.FormatDiagnostic(d))
			continue
		}
		got = append(got, diag{d.Subject.Start.Line, d.Summary, config.FormatDiagnostic(d)})
	}
	want := []struct {
		line     int
		summary  string
		contains []string
	}{
		{lineOf(t, networksConfig, `      "10.20.7.0/24",`), "Overlapping networks", []string{`Client "printer"'s network 10.20.7.0/24 lies within client "floor"'s 10.20.0.0/16`, `hosts in 10.20.7.0/24 are client "printer"`}},
		{lineOf(t, networksConfig, `      "10.20.7.9"`), "Overlapping networks", []string{`client "floor"'s 10.20.0.0/16`}},
		{lineOf(t, networksConfig, `      "10.20.7.9"`), "Redundant network", []string{`Client "printer" lists 10.20.7.9/32, which is within its own 10.20.7.0/24`}},
		{lineOf(t, networksConfig, `      "10.20.7.0/24",`) + 2, "Duplicate network", []string{`Client "printer" lists 10.20.7.0/24 twice`}},
		{lineOf(t, networksConfig, `    networks = ["198.18.0.0/15"`), "Wide public network", []string{"198.18.0.0/15 holds 131072 addresses"}},
	}
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%v", got)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if g.line == w.line && g.summary == w.summary {
				found = true
				for _, c := range w.contains {
					if !strings.Contains(g.content, c) {
						t.Errorf("%q does not say %q", g.content, c)
					}
				}
				if !strings.Contains(g.content, ": warning: ") {
					t.Errorf("%q is not printed as a warning", g.content)
				}
			}
		}
		if !found {
			t.Errorf("no %q warning at line %d; got %v", w.summary, w.line, got)
		}
	}
}

// A listener's TLS floor: 1.2 by default, 1.3 on request, 1.0 and 1.1 as a
// loud opt-in for old devices.
func TestMinTLSVersion(t *testing.T) {
	body := `listener "default" {
  address       = "127.0.0.1:587"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}
listener "modern" {
  address         = "127.0.0.1:465"
  tls_mode        = "implicit"
  tls_cert_file   = "/etc/oauthrelay/tls.crt"
  tls_key_file    = "/etc/oauthrelay/tls.key"
  min_tls_version = "1.3"
}
listener "printers" {
  address         = "127.0.0.1:2587"
  tls_cert_file   = "/etc/oauthrelay/tls.crt"
  tls_key_file    = "/etc/oauthrelay/tls.key"
  min_tls_version = "1.0"
}
` + networksConfig[strings.Index(networksConfig, "provider"):]
	path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", body)
	loaded := config.Load(path, config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	got := map[string]uint16{}
	for _, l := range loaded.Config.Listeners {
		got[l.Name] = l.MinTLSVersion
	}
	if diff := cmp.Diff(map[string]uint16{"default": tls.VersionTLS12, "modern": tls.VersionTLS13, "printers": tls.VersionTLS10}, got); diff != "" {
		t.Errorf("min_tls_version (-want +got):\n%s", diff)
	}
	line := lineOf(t, body, `  min_tls_version = "1.0"`)
	found := false
	for _, d := range loaded.Diagnostics {
		if d.Summary == "Legacy TLS allowed" {
			found = d.Severity == hcl.DiagWarning && d.Subject.Start.Line == line && strings.Contains(d.Detail, `Listener "printers" accepts TLS 1.0`)
		}
	}
	if !found {
		t.Errorf("no legacy TLS warning at line %d: %v", line, loaded.Diagnostics)
	}
}
