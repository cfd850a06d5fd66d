// Package testutil holds helpers shared by the tests: the sandbox provider
// with cleanup, captured logs, files in temporary directories and a small
// SMTP client. It is imported by tests only.
package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
)

// Sandbox starts the sandbox provider and stops it when the test ends.
func Sandbox(t testing.TB, opts devsandbox.Options) *devsandbox.Sandbox {
	t.Helper()
	sb, err := devsandbox.Start(opts)
	if err != nil {
		t.Fatalf("starting sandbox: %v", err)
	}
	t.Cleanup(sb.Close)
	return sb
}

// WriteFile writes content to name inside dir and returns the path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// FastHash hashes a password with bcrypt's minimum cost, so tests do not
// spend their time in key stretching.
func FastHash(t testing.TB, password string) string {
	t.Helper()
	h, err := passwd.Hash(passwd.Bcrypt, password, 4)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// LogBuffer is a concurrency-safe log sink.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a trace-level logger writing into the buffer, and on test
// failure into the test log.
func (b *LogBuffer) Logger(t testing.TB) hclog.Logger {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			out := b.String()
			if len(out) > 20000 {
				out = "…" + out[len(out)-20000:]
			}
			t.Logf("captured logs:\n%s", out)
		}
	})
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Trace, Output: b})
}

// AssertNoSecrets fails the test for every secret value found in text.
func AssertNoSecrets(t testing.TB, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(text, s) {
			t.Errorf("%s contain a secret value (%d chars, starting %q)", what, len(s), s[:min(4, len(s))])
		}
	}
}

// Mail is one message for Send.
type Mail struct {
	User, Password string
	From           string
	To             []string
	Body           string
	// Source is the local address to connect from ("" for any): a
	// device in a client network, which needs no AUTH (User empty).
	Source string
	// Helo is the EHLO name ("" for client.test).
	Helo string
}

// Send submits a message over plain SMTP with AUTH PLAIN and returns the
// relay's final reply text, or the first error (an *smtp.SMTPError for a
// reply). Authentication is skipped when User is empty.
func Send(addr string, m Mail) (string, error) {
	var d net.Dialer
	if m.Source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(m.Source)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	c := smtp.NewClient(nc)
	defer c.Close()
	helo := m.Helo
	if helo == "" {
		helo = "client.test"
	}
	if err := c.Hello(helo); err != nil {
		return "", err
	}
	if m.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", m.User, m.Password)); err != nil {
			return "", err
		}
	}
	if err := c.Mail(m.From, nil); err != nil {
		return "", err
	}
	for _, to := range m.To {
		if err := c.Rcpt(to, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	body := m.Body
	if body == "" {
		body = "Subject: test\r\n\r\nhello\r\n"
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_ = c.Quit()
	return resp.StatusText, nil
}

// Code returns the SMTP reply code and enhanced code of err as "550 5.7.1",
// or "" when err is not an SMTP reply.
func Code(err error) string {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return ""
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
