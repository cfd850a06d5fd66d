package interop

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestSwaks relays through swaks (Debian package swaks): STARTTLS
// (--tls) and implicit TLS (--tlsc) with the certificate verified, AUTH
// PLAIN and LOGIN, --pipeline, 8-bit content, a 20 MiB message and a
// file with Unix line endings. swaks cannot send BODY=8BITMIME, SMTPUTF8
// or DSN parameters, so those rows are not in its matrix.
func TestSwaks(t *testing.T) {
	t.Parallel()
	c := &swaks{bin: lookClient(t, "swaks", "swaks"), r: startRelay(t)}
	cases := append(tlsAuthCases(), pipeliningCase(), eightBitCase(false), bareLFCase(), largeCase())
	runClient(t, c.r, c, "swaks", cases)
}

type swaks struct {
	bin string
	r   *relay
}

func (c *swaks) send(t *testing.T, s submission) string {
	t.Helper()
	file := testutil.WriteFile(t, t.TempDir(), "message.eml", string(s.input))
	args := []string{
		"--server", c.r.addr(s.tls),
		"--tls-verify", "--tls-ca-path", c.r.caFile,
		"--auth", s.mech, "--auth-user", appUser, "--auth-password", c.r.password,
		"--from", s.from, "--to", strings.Join(s.rcpts, ","),
		"--data", "@" + file,
		"--pipeline",
		// The message itself is left out of the transcript.
		"--suppress-data",
	}
	if s.tls == implicitTLS {
		args = append(args, "--tlsc")
	} else {
		args = append(args, "--tls")
	}
	return run(t, c.bin, args, nil)
}

// wire: swaks ("data fixup", on by default) ends every line with CRLF,
// keeps a CR that is not followed by LF, and sends "\r\n." after the
// data: a message that ends with a line break gains an empty last line.
func (c *swaks) wire(s submission) []byte { return append(crlf(s.input), '\r', '\n') }

var swaksAuth = regexp.MustCompile(`(?m)^ ~> AUTH (\S+)`)

func (c *swaks) mechanism(transcript string) string {
	if m := swaksAuth.FindStringSubmatch(transcript); m != nil {
		return m[1]
	}
	return ""
}

// pipelined: swaks marks what it sends with " ~>" and what it reads with
// "<~ " (over TLS).
func (c *swaks) pipelined(transcript string) bool {
	return pipelinedTranscript(transcript, " ~> ", "<~ ")
}

// pipelinedTranscript reports whether a transcript shows MAIL, every
// RCPT and DATA sent before the reply to MAIL was read (RFC 2920 §3.1).
func pipelinedTranscript(transcript, sent, read string) bool {
	mail, rcpts, data := false, 0, false
	for _, l := range strings.Split(transcript, "\n") {
		switch {
		case strings.HasPrefix(l, sent+"MAIL FROM:"):
			mail = true
		case mail && strings.HasPrefix(l, sent+"RCPT TO:"):
			rcpts++
		case mail && strings.HasPrefix(l, sent+"DATA"):
			data = true
		case mail && strings.HasPrefix(l, read):
			return rcpts > 0 && data
		}
	}
	return false
}

// run runs a client program with a clean environment and returns its
// combined output; a non-zero exit fails the test.
func run(t *testing.T, bin string, args []string, stdin []byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv(t)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s failed: %v\n%s", bin, err, tail(string(out), 8000))
	}
	return string(out)
}
