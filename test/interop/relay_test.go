package interop

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// binary is the oauthrelay binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oauthrelay-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "oauthrelay")
	build := exec.Command("go", "build", "-o", binary, "github.com/oauthrelay/oauthrelay/cmd/oauthrelay")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the relay binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	// account is the mailbox the relay sends as; client authenticates
	// locally as appUser.
	account  = "alice@example.com"
	appUser  = "app"
	hostname = "relay.interop.test"
)

// relay is a running oauthrelay binary in front of its own sandbox
// provider, with a STARTTLS and an implicit-TLS listener whose
// certificate the sandbox CA (caFile) issued.
type relay struct {
	sb       *devsandbox.Sandbox
	starttls string // host:port of the STARTTLS listener (submission, RFC 6409)
	implicit string // host:port of the implicit-TLS listener (submissions, RFC 8314)
	caFile   string
	password string
	logs     *testutil.LogBuffer
	secrets  []string
}

// startRelay starts a sandbox provider and `oauthrelay run` against it,
// configured by an HCL file as an operator would, and waits until both
// listeners accept connections. Everything stops when the test ends.
func startRelay(t *testing.T) *relay {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	dir := t.TempDir()
	const clientSecret = "interop-client-secret"
	sb.Tokens.AddClient("relay", clientSecret)
	refresh := sb.Tokens.IssueRefreshToken("relay", account, config.GoogleScope)
	password := "interop-pw-" + strings.ReplaceAll(t.Name(), "/", "-")
	r := &relay{sb: sb, caFile: filepath.Join(dir, "ca.pem"), password: password, logs: &testutil.LogBuffer{}}
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	testutil.WriteFile(t, dir, "client-secret", clientSecret)
	testutil.WriteFile(t, dir, "refresh-token", refresh)
	cert, key := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	// Two listeners on 127.0.0.1:0 would be one address to the
	// configuration; the implicit one takes another loopback address.
	if err := sb.CA.WriteFiles(cert, key, "127.0.0.1", "127.0.0.2", "localhost"); err != nil {
		t.Fatal(err)
	}
	cfg := testutil.WriteFile(t, dir, "oauthrelay.hcl", fmt.Sprintf(`
server {
  hostname   = %q
  log_format = "json"
}
listener "starttls" {
  address       = "127.0.0.1:0"
  tls_mode      = "starttls"
  tls_cert_file = %q
  tls_key_file  = %q
}
listener "implicit" {
  address       = "127.0.0.2:0"
  tls_mode      = "implicit"
  tls_cert_file = %q
  tls_key_file  = %q
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = %q
}
account_group "interop" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "file://%s/client-secret"
  account %q { refresh_token = "file://%s/refresh-token" }
  client %q { password_hash = %q }
}
`, hostname, cert, key, cert, key, sb.Tokens.URL, sb.SMTP.Addr, r.caFile, dir, account, dir, appUser, testutil.FastHash(t, password)))

	cmd := exec.Command(binary, "run", "-config", cfg)
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("relay output:\n%s", tail(r.logs.String(), 20000))
		}
	})
	testutil.WaitFor(t, 30*time.Second, "the relay's listeners", func() bool {
		select {
		case <-exited:
			t.Fatalf("the relay exited at start-up:\n%s", r.logs.String())
		default:
		}
		r.starttls, r.implicit = listening(r.logs.String())
		return r.starttls != "" && r.implicit != ""
	})
	r.secrets = []string{clientSecret, refresh, password}
	return r
}

// listening reads the addresses the relay logged it listens on.
func listening(logs string) (starttls, implicit string) {
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line struct {
			Message  string `json:"@message"`
			Listener string `json:"listener"`
			Address  string `json:"address"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Message != "listening" {
			continue
		}
		switch line.Listener {
		case "starttls":
			starttls = line.Address
		case "implicit":
			implicit = line.Address
		}
	}
	return starttls, implicit
}

// addr returns the listener address for a TLS mode.
func (r *relay) addr(m tlsMode) string {
	if m == implicitTLS {
		return r.implicit
	}
	return r.starttls
}

// assertNoSecrets checks the relay's logs for every credential the test
// used, access tokens included.
func (r *relay) assertNoSecrets(t *testing.T) {
	t.Helper()
	testutil.AssertNoSecrets(t, "relay logs", r.logs.String(), append(r.sb.Tokens.IssuedAccessTokens(), r.secrets...))
}

// message returns the message the provider received with the given
// Message-ID, waiting for it while ready allows (Postfix delivers in the
// background; the other clients have finished when the relay answered).
func (r *relay) message(t *testing.T, messageID string, ready func() bool) devsandbox.Message {
	t.Helper()
	var found devsandbox.Message
	testutil.WaitFor(t, 2*time.Minute, "the provider to receive "+messageID, func() bool {
		// ready runs on every poll: it fails the test as soon as the
		// client gives up.
		done := ready == nil || ready()
		for _, m := range r.sb.SMTP.Messages() {
			head := m.Data[:min(len(m.Data), 64<<10)]
			if bytes.Contains(head, []byte("\nMessage-ID: "+messageID)) {
				found = m
				return done
			}
		}
		return false
	})
	return found
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
