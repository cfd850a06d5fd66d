package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// devSession is a running `oauthrelay dev` and what its banner said.
type devSession struct {
	smtpAddr, queuedAddr, password, caFile, inboxURL, messagesURL, configPath string
	consoleURL, adminToken                                                    string
	msmtpLine, swaksLine                                                      string
	stdout, stderr                                                            *testutil.LogBuffer
}

var devBannerFields = map[string]*regexp.Regexp{
	"smtp":     regexp.MustCompile(`(?m)^  SMTP +(\S+)`),
	"queued":   regexp.MustCompile(`(?m)^  SMTP, queued +(\S+)`),
	"password": regexp.MustCompile(`(?m)^  password +(\S+)`),
	"ca":       regexp.MustCompile(`(?m)^  CA file +(\S+)`),
	"inbox":    regexp.MustCompile(`(?m)^  inbox +(\S+)`),
	"messages": regexp.MustCompile(`(?m)^  messages +(\S+)`),
	"config":   regexp.MustCompile(`(?m)^  config +(\S+)`),
	"console":  regexp.MustCompile(`(?m)^  console +(\S+) +\(admin token: (\S+)\)`),
	"msmtp":    regexp.MustCompile(`(?m)^  (printf .*\| msmtp .*)$`),
	"swaks":    regexp.MustCompile(`(?m)^  (swaks .*)$`),
}

// startDev runs `oauthrelay dev` on free loopback ports until the test
// ends, and checks then that it stopped cleanly and logged no secret. The
// waits are generous: under -race on a busy machine start-up (bcrypt, key
// generation) takes seconds; they end as soon as the condition holds.
func startDev(t *testing.T) *devSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &devSession{stdout: &testutil.LogBuffer{}, stderr: &testutil.LogBuffer{}}
	exited, code := make(chan struct{}), 0
	go func() {
		defer close(exited)
		code = Main(ctx, []string{"dev", "-listen", "127.0.0.1:0", "-queue-listen", "127.0.0.1:0", "-telemetry", "127.0.0.1:0", "-console", "127.0.0.1:0"}, IO{Stdout: s.stdout, Stderr: s.stderr})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
			if code != 0 {
				t.Errorf("dev exited %d", code)
			}
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop")
		}
		if t.Failed() {
			t.Logf("stderr:\n%s", s.stderr)
		}
	})
	testutil.WaitFor(t, time.Minute, "the dev banner", func() bool {
		select {
		case <-exited:
			t.Fatalf("dev exited %d before its banner:\n%s", code, s.stderr)
		default:
		}
		return strings.Contains(s.stdout.String(), "Press Ctrl-C to stop.")
	})
	field := func(name string) string {
		m := devBannerFields[name].FindStringSubmatch(s.stdout.String())
		if m == nil {
			t.Fatalf("banner has no %s:\n%s", name, s.stdout)
		}
		return m[1]
	}
	s.smtpAddr, s.queuedAddr, s.password, s.caFile = field("smtp"), field("queued"), field("password"), field("ca")
	s.inboxURL, s.messagesURL, s.configPath = field("inbox"), field("messages"), field("config")
	s.msmtpLine, s.swaksLine = field("msmtp"), field("swaks")
	s.consoleURL = field("console")
	s.adminToken = devBannerFields["console"].FindStringSubmatch(s.stdout.String())[2]
	secrets := s.secrets(t)
	t.Cleanup(func() { testutil.AssertNoSecrets(t, "dev logs", s.stderr.String(), secrets) })
	return s
}

// secrets are the dev password (shown in the banner on purpose, never in
// logs) and the OAuth secrets dev mode wrote next to its configuration.
func (s *devSession) secrets(t *testing.T) []string {
	t.Helper()
	out := []string{s.password}
	for _, name := range []string{"client-secret", "refresh-token", "admin-token"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(s.configPath), name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// awaitMessage waits until the sandbox lists a message with the subject.
func (s *devSession) awaitMessage(t *testing.T, subject string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "message "+subject+" in "+s.messagesURL, func() bool {
		var msgs []struct {
			Subject string `json:"subject"`
			User    string `json:"authenticated_as"`
		}
		resp, err := http.Get(s.messagesURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&msgs) != nil {
			return false
		}
		for _, m := range msgs {
			if m.Subject == subject && m.User == devAccount {
				return true
			}
		}
		return false
	})
}

// caPool reads the CA file the banner names.
func (s *devSession) caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", s.caFile)
	}
	return pool
}

// send submits a message with AUTH PLAIN over c, then closes it.
func (s *devSession) send(t *testing.T, c *smtp.Client, subject string) {
	t.Helper()
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", devUser, s.password)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	body := "Subject: " + subject + "\r\n\r\nIt works.\r\n"
	if err := c.SendMail(devAccount, []string{"you@example.com"}, strings.NewReader(body)); err != nil {
		t.Fatalf("send: %v", err)
	}
	_ = c.Quit()
}

// TestDevSubmission sends through `oauthrelay dev` with STARTTLS verified
// against the CA file its banner names, and without TLS on loopback (curl's
// one-liner); both messages reach the sandbox.
func TestDevSubmission(t *testing.T) {
	s := startDev(t)
	host, _, _ := net.SplitHostPort(s.smtpAddr)
	tests := []struct {
		name string
		dial func() (*smtp.Client, error)
		tls  bool
	}{
		{"STARTTLS verified against the printed CA file", func() (*smtp.Client, error) {
			return smtp.DialStartTLS(s.smtpAddr, &tls.Config{RootCAs: s.caPool(t), ServerName: host})
		}, true},
		{"plaintext AUTH on loopback", func() (*smtp.Client, error) { return smtp.Dial(s.smtpAddr) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.dial()
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			// The TLS handshake happens with the first command after STARTTLS.
			if err := c.Noop(); err != nil {
				t.Fatalf("NOOP: %v", err)
			}
			if state, _ := c.TLSConnectionState(); state.HandshakeComplete != tt.tls || len(state.VerifiedChains) > 0 != tt.tls {
				t.Fatalf("TLS handshake complete %v with %d verified chains, want TLS %v", state.HandshakeComplete, len(state.VerifiedChains), tt.tls)
			}
			subject := "via " + tt.name
			s.send(t, c, subject)
			s.awaitMessage(t, subject)
		})
	}
}

// TestDevQueuedListener sends through dev mode's store-and-forward
// listener: the 250 names the queue ID, the queue delivers the message, and
// `oauthrelay queue show` (the command the banner prints) finds its trail.
func TestDevQueuedListener(t *testing.T) {
	s := startDev(t)
	c, err := smtp.Dial(s.queuedAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", devUser, s.password)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail(devAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("you@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(w, "Subject: queued in dev\r\n\r\nStored, then delivered.\r\n")
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		t.Fatalf("250 %q does not name a queue ID", resp.StatusText)
	}
	s.awaitMessage(t, "queued in dev")
	testutil.WaitFor(t, 30*time.Second, "the delivered state in the trail", func() bool {
		var out, errOut testutil.LogBuffer
		if Main(context.Background(), []string{"queue", "show", "-config", s.configPath, id}, IO{Stdout: &out, Stderr: &errOut}) != 0 {
			return false
		}
		return strings.Contains(out.String(), "delivered")
	})
}

// TestDevCertificateNeedsTheCAFile shows the STARTTLS certificate is really
// checked: without the sandbox CA, verification fails.
func TestDevCertificateNeedsTheCAFile(t *testing.T) {
	s := startDev(t)
	c, err := smtp.DialStartTLS(s.smtpAddr, &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	// The TLS handshake happens with the first command after STARTTLS.
	err = c.Noop()
	if err == nil {
		t.Fatal("STARTTLS verified without the sandbox CA")
	}
	if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("error %v, want an unknown authority", err)
	}
}

// TestDevMsmtp runs the banner's msmtp line as a user would paste it:
// Debian's msmtp with its certificate checks and AUTH, which refuses to
// send a password without TLS. It fails, never skips, without msmtp
// (.ci/run installs it).
func TestDevMsmtp(t *testing.T) {
	msmtp, err := exec.LookPath("msmtp")
	if err != nil {
		t.Fatalf("msmtp is needed for this test (apt-get install msmtp; .ci/run installs it): %v", err)
	}
	s := startDev(t)
	for _, want := range []string{"--tls=on", "--tls-trust-file=" + s.caFile, "--auth=on"} {
		if !strings.Contains(s.msmtpLine, want) {
			t.Errorf("msmtp line lacks %s: %s", want, s.msmtpLine)
		}
	}
	if strings.Contains(s.msmtpLine, "certcheck") {
		t.Errorf("msmtp line weakens certificate checks: %s", s.msmtpLine)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", s.msmtpLine)
	// An empty HOME: no ~/.msmtprc or ~/.netrc may change the outcome.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "PATH="+filepath.Dir(msmtp)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s\nfailed: %v\n%s", strings.ReplaceAll(s.msmtpLine, s.password, "<password>"), err, out)
	}
	s.awaitMessage(t, "hello")
}

// TestDevInbox follows the banner's inbox link to the message's .eml.
func TestDevInbox(t *testing.T) {
	s := startDev(t)
	c, err := smtp.Dial(s.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	s.send(t, c, "for the inbox")
	s.awaitMessage(t, "for the inbox")
	page := httpGet(t, s.inboxURL)
	link := regexp.MustCompile(`href="(/dev/messages/[0-9a-f]+\.eml)"`).FindStringSubmatch(page)
	if link == nil || !strings.Contains(page, "for the inbox") {
		t.Fatalf("inbox lists no message:\n%s", page)
	}
	eml := httpGet(t, strings.TrimSuffix(s.inboxURL, "/dev/")+link[1])
	if !strings.Contains(eml, "Subject: for the inbox\r\n") || !strings.HasSuffix(eml, "It works.\r\n") {
		t.Errorf(".eml = %q", eml)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// TestDevConsole uses the console the banner names, with its token: the
// history search finds a message sent through the relay, with its
// subject (dev mode keeps subjects).
func TestDevConsole(t *testing.T) {
	s := startDev(t)
	c, err := smtp.Dial(s.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	s.send(t, c, "for the console")
	testutil.WaitFor(t, time.Minute, "the message in the console's history", func() bool {
		req, _ := http.NewRequest("GET", s.consoleURL+"api/v1/messages?subject=for+the+console", nil)
		req.Header.Set("Authorization", "Bearer "+s.adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var res struct {
			Messages []struct{ Subject, State string }
		}
		return json.NewDecoder(resp.Body).Decode(&res) == nil && len(res.Messages) == 1 && res.Messages[0].State == "sent"
	})
	resp, err := http.Get(s.consoleURL + "api/v1/overview")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the console without a token: %d, want 401", resp.StatusCode)
	}
}
