package config_test

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func reviewConfig(client string) string {
	return `listener "l" {
  address  = "0.0.0.0:2525"
  tls_mode = "none"
  allow_insecure_auth = true
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "literal-secret"
  account "ceo@example.com" { refresh_token = "rt" }
  account "scans@example.com" { refresh_token = "rt" }
` + client + `}
`
}

func diagSummaries(ds hcl.Diagnostics, sev hcl.DiagnosticSeverity) string {
	var s []string
	for _, d := range ds {
		if d.Severity == sev {
			s = append(s, d.Summary+": "+d.Detail)
		}
	}
	return strings.Join(s, "\n")
}

// Review findings on what a client network lets through without a
// password, each expected to be at least a warning:
//   - a network client without allowed_senders (nor send_as) may send as
//     every account of the group (the AUTH clients' default) — any host on
//     the scanner LAN can send as ceo@;
//   - a loopback network makes every connection that a process on this
//     host forwards (reverse proxy, stunnel, ssh -L, docker-proxy) this
//     client, whoever is behind it;
//   - "0.0.0.0/1" (half of all IPv4 addresses) is only a "Wide public
//     network" warning; "Networks allow everyone" is an error only when the
//     networks hold every address, so it is bypassed by one prefix bit.
func TestReviewNetworkClientPosture(t *testing.T) {
	tests := []struct {
		name   string
		client string
		sev    hcl.DiagnosticSeverity
		want   string // in the summary or detail of a diagnostic of sev
	}{
		{"network client sends as every account by default", `  client "scanners" {
    networks = ["10.20.0.0/24"]
  }
`, hcl.DiagError, "a client identified by network must name its senders"}, // decision: an error, not a warning
		{"loopback network", `  client "local" {
    networks        = ["127.0.0.0/8"]
    allowed_senders = ["scans@example.com"]
  }
`, hcl.DiagWarning, "127.0.0.0/8"},
		{"half of the Internet", `  client "half" {
    networks        = ["0.0.0.0/1"]
    allowed_senders = ["scans@example.com"]
  }
`, hcl.DiagError, "0.0.0.0/1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", reviewConfig(tc.client))
			loaded := config.Load(path, config.Overrides{})
			got := diagSummaries(loaded.Diagnostics, tc.sev)
			if !strings.Contains(got, tc.want) {
				t.Errorf("no diagnostic of severity %v mentioning %q; all diagnostics: %v", tc.sev, tc.want, loaded.Diagnostics)
			}
		})
	}
}
