package app

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// networkConfig is a configuration whose client "scanner" has networks.
func networkConfig(t *testing.T, networks string) string {
	t.Helper()
	return testutil.WriteFile(t, t.TempDir(), "relay.hcl", fmt.Sprintf(`listener "devices" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "literal-secret"
  account "scans@example.com" { refresh_token = "literal-rt" }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
  client "scanner" {
    networks        = %s
    allowed_senders = ["scans@example.com"]
  }
}
`, networks))
}

// check proves on every listener that a client outside every client
// network cannot send without AUTH: it connects from such a loopback
// address and expects 530 at MAIL. Networks that would make an open relay
// are refused by the configuration itself, so validate and run refuse them
// too.
func TestCheckOpenRelaySelfTest(t *testing.T) {
	tests := []struct {
		name, networks string
		code           int
		stdout, stderr string
	}{
		{
			name: "loopback listener, devices on part of loopback", networks: `["127.0.0.0/30"]`,
			stdout: `listener "devices" (127.0.0.1:0): no open relay: 127.0.0.4 is in no client network; a connection from it without AUTH got "530 5.7.0 Authentication required" at MAIL`,
		},
		{
			name: "loopback listener, every local address a device", networks: `["127.0.0.0/8"]`,
			stdout: `listener "devices" (127.0.0.1:0): no open relay: every address that can reach it (127.0.0.0/8) is in a client network: only processes on this host can connect, and each is a client`,
		},
		{
			name: "devices elsewhere", networks: `["10.20.0.0/24", "::1"]`,
			stdout: `listener "devices" (127.0.0.1:0): no open relay: 127.0.0.1 is in no client network; a connection from it without AUTH got "530 5.7.0 Authentication required" at MAIL`,
		},
		{
			name: "everyone", networks: `["0.0.0.0/0"]`, code: 1,
			stderr: `relay.hcl:17:24: Networks allow everyone: Together the networks of client "scanner" hold every IPv4 address`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := networkConfig(t, tc.networks)
			vcode, _, _ := run(t, "", "validate", "-config", path)
			code, out, errOut := run(t, "", "check", "-config", path)
			if code != tc.code || vcode != tc.code {
				t.Fatalf("check: exit %d, validate: exit %d, want %d\nstdout: %s\nstderr: %s", code, vcode, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stdout:\n%s\nwant %q\nstderr:\n%s\nwant %q", out, tc.stdout, errOut, tc.stderr)
			}
			if tc.code == 0 && !strings.Contains(out, "no open relay)") {
				t.Errorf("summary does not report the self-test:\n%s", out)
			}
		})
	}
}

// A listener the self-test could not test by connection is printed as
// such, and the summary does not claim "no open relay" for it.
func TestOpenRelayUntestedPrinted(t *testing.T) {
	results := []server.OpenRelayResult{
		{Listener: "lan", Address: "0.0.0.0:25", OK: true, Detail: "127.0.0.2 is in no client network; a connection from it without AUTH got \"530 5.7.0 Authentication required\" at MAIL"},
		{Listener: "dmz", Address: "[fe80::1%eth0]:25", OK: true, Untested: true, Detail: "2001:db8::1 is in no client network, so the configuration says a client there must AUTH; there is no local address outside every client network to connect from"},
	}
	var out bytes.Buffer
	if errs := openRelayFailures(results, IO{Stdout: &out}); len(errs) != 0 {
		t.Fatalf("failures %v", errs)
	}
	want := `listener "lan" (0.0.0.0:25): no open relay: 127.0.0.2 is in no client network` + "\n" +
		`listener "dmz" ([fe80::1%eth0]:25): not tested by connection: 2001:db8::1 is in no client network`
	for _, line := range strings.Split(want, "\n") {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output\n%s\nlacks %q", out.String(), line)
		}
	}
	if got := openRelaySummary(results); got != "no open relay found, 1 listener(s) not tested by connection" {
		t.Errorf("summary %q", got)
	}
	if got := openRelaySummary(results[:1]); got != "no open relay" {
		t.Errorf("summary %q", got)
	}
}
