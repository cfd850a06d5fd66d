package interop

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestCurl relays through curl (Debian package curl) with
// --mail-from/--mail-rcpt/--upload-file: smtp:// with --ssl-reqd
// (STARTTLS required) and smtps:// (implicit TLS), the certificate
// verified, AUTH PLAIN and LOGIN (--login-options AUTH=…), 8-bit content,
// a 20 MiB message, a file with Unix line endings sent as it is and with
// --crlf, and a UTF-8 recipient (curl adds SMTPUTF8 itself). curl sends
// one command at a time (no PIPELINING) and declares no BODY=8BITMIME or
// DSN.
func TestCurl(t *testing.T) {
	t.Parallel()
	c := &curl{bin: lookClient(t, "curl", "curl"), r: startRelay(t)}
	cases := append(tlsAuthCases(), eightBitCase(false), bareLFCase(), largeCase(),
		interopCase{name: "bare-lf --crlf", sub: submission{tls: startTLS, mech: "PLAIN", variant: "--crlf"}, message: lfMessage},
		interopCase{
			name:    "crlf --crlf",
			sub:     submission{tls: startTLS, mech: "PLAIN", variant: "--crlf"},
			message: basicMessage,
			pending: "relay bug: a line ending in CR CR LF before the final dot (curl --crlf on a CRLF file sends \"\\r\\r\\n.\\r\\n\") is not taken as the end of DATA: " +
				"go-smtp v0.25.1's dataReader leaves its CR state on the second CR, so the relay waits for more data and the client times out " +
				"(and net/textproto's DotWriter would then write that line end upstream as CR CR CR LF)",
		},
		smtputf8Case(),
	)
	runClient(t, c.r, c, "curl", cases)
}

type curl struct {
	bin string
	r   *relay
}

func (c *curl) send(t *testing.T, s submission) string {
	t.Helper()
	file := testutil.WriteFile(t, t.TempDir(), "message.eml", string(s.input))
	url := "smtp://" + c.r.addr(s.tls)
	if s.tls == implicitTLS {
		url = "smtps://" + c.r.addr(s.tls)
	}
	args := []string{
		"-q", // no ~/.curlrc
		"--silent", "--show-error", "--max-time", "100",
		url, "--ssl-reqd", "--cacert", c.r.caFile,
		"--user", appUser + ":" + c.r.password, "--login-options", "AUTH=" + s.mech,
		"--mail-from", s.from,
		"--upload-file", file,
	}
	for _, r := range s.rcpts {
		args = append(args, "--mail-rcpt", r)
	}
	if s.variant == "--crlf" {
		args = append(args, "--crlf")
	}
	if s.verbose {
		args = append(args, "--verbose")
	}
	return run(t, c.bin, args, nil)
}

// wire: curl sends the file as it is (with --crlf every LF becomes CRLF,
// a CRLF too: CR CR LF) and ends it with "\r\n.\r\n" unless it ends
// with CRLF. It dot-stuffs only after CRLF; the relay, like Postfix's
// smtpd_forbid_bare_newline = normalize, takes a bare LF as a line break
// and undoes the dot that starts the next line — which curl did not
// double, so that dot is lost (send files with CRLF, or use --crlf).
func (c *curl) wire(s submission) []byte {
	b := s.input
	if s.variant == "--crlf" {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return withFinalCRLF(dropDotAfterBareLF(b))
}

// dropDotAfterBareLF removes the first dot of every line that follows a
// bare LF, as the relay reads DATA.
func dropDotAfterBareLF(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i, c := range b {
		if c == '.' && i > 0 && b[i-1] == '\n' && (i < 2 || b[i-2] != '\r') {
			continue
		}
		out = append(out, c)
	}
	return out
}

var curlAuth = regexp.MustCompile(`(?m)^> AUTH (\S+)`)

func (c *curl) mechanism(transcript string) string {
	if m := curlAuth.FindStringSubmatch(transcript); m != nil {
		return m[1]
	}
	return ""
}
