package interop

import (
	"regexp"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestMsmtp relays through msmtp (Debian package msmtp), the sendmail
// replacement of many servers and containers: STARTTLS and implicit TLS
// (--tls-starttls=off) with the certificate verified, AUTH PLAIN and
// LOGIN, PIPELINING (msmtp pipelines whenever it is offered), 8-bit
// content, a 20 MiB message, standard input with Unix line endings, and
// DSN requests (--dsn-notify, --dsn-return). msmtp declares neither
// BODY=8BITMIME nor SMTPUTF8.
func TestMsmtp(t *testing.T) {
	t.Parallel()
	c := &msmtp{bin: lookClient(t, "msmtp", "msmtp"), r: startRelay(t)}
	cases := append(tlsAuthCases(), pipeliningCase(), eightBitCase(false), bareLFCase(), largeCase(),
		dsnCase(dsnRequest{notify: "SUCCESS,FAILURE", ret: "HDRS"}, false))
	runClient(t, c.r, c, "msmtp", cases)
}

type msmtp struct {
	bin string
	r   *relay
}

func (c *msmtp) send(t *testing.T, s submission) string {
	t.Helper()
	host, port, _ := strings.Cut(c.r.addr(s.tls), ":")
	// An empty configuration file: nothing but these options applies.
	conf := testutil.WriteFile(t, t.TempDir(), "msmtprc", "")
	args := []string{
		"--file=" + conf,
		"--host=" + host, "--port=" + port,
		"--tls=on", "--tls-trust-file=" + c.r.caFile,
		"--auth=" + strings.ToLower(s.mech), "--user=" + appUser,
		"--passwordeval=echo " + c.r.password,
		"--from=" + s.from,
	}
	if s.tls == implicitTLS {
		args = append(args, "--tls-starttls=off")
	}
	if s.dsn != nil {
		args = append(args, "--dsn-notify="+strings.ToLower(s.dsn.notify), "--dsn-return="+map[string]string{"HDRS": "headers", "FULL": "full"}[s.dsn.ret])
	}
	if s.verbose {
		args = append(args, "--debug")
	}
	return run(t, c.bin, append(append(args, "--"), s.rcpts...), s.input)
}

// wire: msmtp ends every line with CRLF and adds one after a last line
// without a line break; a CR not followed by LF stays.
func (c *msmtp) wire(s submission) []byte { return withFinalCRLF(crlf(s.input)) }

var msmtpAuth = regexp.MustCompile(`(?m)^--> AUTH (\S+)`)

func (c *msmtp) mechanism(transcript string) string {
	if m := msmtpAuth.FindStringSubmatch(transcript); m != nil {
		return m[1]
	}
	return ""
}

func (c *msmtp) pipelined(transcript string) bool {
	return pipelinedTranscript(transcript, "--> ", "<-- ")
}
