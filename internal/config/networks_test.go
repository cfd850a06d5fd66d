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
    allowed_senders = ["b@example.com"]
  }
  client "branch" {
    networks = ["198.18.0.0/15", "203.0.113.7"]
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
    allowed_senders = ["a@example.com", "b@example.com"]
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
	if diff := cmp.Diff([]string{"b@example.com"}, clients["printer"].AllowedSenders); diff != "" {
		t.Errorf("printer's senders (-want +got):\n%s", diff)
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

// What a client network lets through without a password: networks that
// connections are forwarded from load with a warning that names the
// hazard; a public network wider than a /8 (IPv4) or a /32 (IPv6) is an
// error, a private one is not; a network client must name its senders.
func TestNetworkPosture(t *testing.T) {
	tests := []struct {
		name     string
		client   string
		sev      hcl.DiagnosticSeverity // 0: no diagnostic at all
		summary  string
		contains string
	}{
		{"loopback", `networks = ["127.0.0.1"]`, hcl.DiagWarning, "Network of forwarded connections", "loopback addresses, from which a local reverse proxy"},
		{"IPv6 loopback", `networks = ["::1"]`, hcl.DiagWarning, "Network of forwarded connections", "the loopback address"},
		{"IPv4 link-local", `networks = ["169.254.10.0/24"]`, hcl.DiagWarning, "Network of forwarded connections", "link-local addresses"},
		{"IPv6 link-local", `networks = ["fe80::/64"]`, hcl.DiagWarning, "Network of forwarded connections", "link-local addresses"},
		{"network around the Docker bridge", `networks = ["172.16.0.0/12"]`, hcl.DiagWarning, "Network of forwarded connections", "Docker's default bridge network"},
		{"Docker bridge gateway", `networks = ["172.17.0.1"]`, hcl.DiagWarning, "Network of forwarded connections", "172.17.0.1"},
		{"private /8", `networks = ["10.0.0.0/8"]`, 0, "", ""},
		{"next to the Docker bridge", `networks = ["172.18.0.0/16"]`, 0, "", ""},
		{"public /8", `networks = ["11.0.0.0/8"]`, hcl.DiagWarning, "Wide public network", "11.0.0.0/8 holds 16777216 addresses"},
		{"public /7", `networks = ["12.0.0.0/7"]`, hcl.DiagError, "Public network too wide", "may be at most a /8"},
		{"an eighth of IPv4", `networks = ["192.0.0.0/3"]`, hcl.DiagError, "Public network too wide", "192.0.0.0/3 holds 536870912 addresses"},
		{"IPv6 /32", `networks = ["2001:db8::/32"]`, hcl.DiagWarning, "Wide public network", "2001:db8::/32"},
		{"IPv6 /16", `networks = ["2001::/16"]`, hcl.DiagError, "Public network too wide", "may be at most a /32"},
		{"private IPv6 /7", `networks = ["fc00::/7"]`, 0, "", ""},
		{"no senders", `networks = ["10.20.0.0/24"]`, hcl.DiagError, "Network client without senders", "a client identified by network must name its senders: set allowed_senders or send_as"},
		{"no senders, a password too", "networks = [\"10.20.0.0/24\"]\n    password_hash = \"$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE.\"", hcl.DiagError, "Network client without senders", "would send as every account of group"},
		{"send_as is enough", "networks = [\"10.20.0.0/24\"]\n    send_as = \"a@example.com\"", 0, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := "    " + tc.client + "\n"
			if !strings.Contains(tc.client, "send_as") && tc.summary != "Network client without senders" {
				client += "    allowed_senders = [\"a@example.com\"]\n"
			}
			body := networksConfig[:strings.Index(networksConfig, "  client \"app\"")] + "  client \"dev\" {\n" + client + "  }\n}\n"
			path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", body)
			loaded := config.Load(path, config.Overrides{})
			if tc.sev == 0 {
				if len(loaded.Diagnostics) != 0 {
					t.Fatalf("diagnostics: %v", loaded.Diagnostics)
				}
				return
			}
			if len(loaded.Diagnostics) != 1 {
				t.Fatalf("want one diagnostic, got %v", loaded.Diagnostics)
			}
			d := loaded.Diagnostics[0]
			text := config.FormatDiagnostic(d)
			if d.Severity != tc.sev || d.Summary != tc.summary || !strings.Contains(text, tc.contains) {
				t.Errorf("got %s\nwant severity %v, %q, saying %q", text, tc.sev, tc.summary, tc.contains)
			}
			// The client's label, or the network's list item.
			at := ":15:17:"
			if tc.summary == "Network client without senders" {
				at = ":14:10:"
			}
			if !strings.HasPrefix(text, path+at) {
				t.Errorf("%q is not at %s", text, at)
			}
		})
	}
}
