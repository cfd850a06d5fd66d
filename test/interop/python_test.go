package interop

import (
	_ "embed"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

//go:embed testdata/smtplib_send.py
var smtplibScript string

// TestPythonSmtplib relays through Python's smtplib (the machine's
// python3, Debian package python3; standard library only): SMTP.starttls
// and SMTP_SSL with the certificate verified, AUTH PLAIN and LOGIN,
// sendmail() with BODY=8BITMIME, send_message() with an EmailMessage, a
// 20 MiB message, Unix line endings as str (smtplib turns them into
// CRLF) and as bytes (sent unchanged), SMTPUTF8 (send_message adds it for
// a UTF-8 address) and DSN options. smtplib sends one command at a time
// (no PIPELINING).
func TestPythonSmtplib(t *testing.T) {
	t.Parallel()
	c := &python{bin: lookClient(t, "python3", "python3"), r: startRelay(t), sentFiles: map[string]string{}}
	c.script = testutil.WriteFile(t, t.TempDir(), "smtplib_send.py", smtplibScript)
	bareLFBytes := bareLFCase()
	cases := append(tlsAuthCases(), eightBitCase(true), bareLFBytes,
		interopCase{name: "bare-lf str", sub: submission{tls: startTLS, mech: "PLAIN", variant: "str"}, message: lfMessage},
		interopCase{name: "send_message", sub: submission{tls: startTLS, mech: "LOGIN", variant: "message"}, message: basicMessage},
		largeCase(),
		withVariant(smtputf8Case(), "message"),
		dsnCase(dsnRequest{notify: "SUCCESS,FAILURE", ret: "HDRS", envid: "interop-envid-1"}, true),
	)
	runClient(t, c.r, c, "python", cases)
}

func withVariant(tc interopCase, v string) interopCase {
	tc.sub.variant = v
	return tc
}

type python struct {
	bin, script string
	r           *relay
	sentFiles   map[string]string // submission id → the content the script recorded
}

type smtplibJob struct {
	Host        string   `json:"host"`
	Port        string   `json:"port"`
	TLS         string   `json:"tls"`
	CAFile      string   `json:"cafile"`
	Mech        string   `json:"mech"`
	User        string   `json:"user"`
	Password    string   `json:"password"`
	From        string   `json:"from"`
	Rcpts       []string `json:"rcpts"`
	File        string   `json:"file"`
	Sent        string   `json:"sent"`
	Mode        string   `json:"mode"`
	MailOptions []string `json:"mail_options"`
	RcptOptions []string `json:"rcpt_options"`
}

func (c *python) send(t *testing.T, s submission) string {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := strings.Cut(c.r.addr(s.tls), ":")
	job := smtplibJob{
		Host: host, Port: port, TLS: s.tls.String(), CAFile: c.r.caFile,
		Mech: s.mech, User: appUser, Password: c.r.password,
		From: s.from, Rcpts: s.rcpts,
		File: testutil.WriteFile(t, dir, "message.eml", string(s.input)),
		Sent: filepath.Join(dir, "sent.eml"),
		Mode: "bytes",
	}
	if s.variant != "" {
		job.Mode = s.variant
	}
	if s.eightBit {
		job.MailOptions = append(job.MailOptions, "BODY=8BITMIME")
	}
	if d := s.dsn; d != nil {
		job.MailOptions = append(job.MailOptions, "RET="+d.ret, "ENVID="+d.envid)
		job.RcptOptions = append(job.RcptOptions, "NOTIFY="+d.notify, "ORCPT=rfc822;"+s.rcpts[0])
	}
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	c.sentFiles[s.id] = job.Sent
	// -I: isolated mode, no user site-packages or PYTHON* variables.
	return run(t, c.bin, []string{"-I", c.script, testutil.WriteFile(t, dir, "job.json", string(spec))}, nil)
}

// wire is nil: the script records what smtplib sent (see sent).
func (c *python) wire(submission) []byte { return nil }

// sent returns the content smtplib put on the wire, as the script
// recorded it: a str with every line ending made CRLF, bytes unchanged,
// an EmailMessage as its generator flattened it.
func (c *python) sent(t *testing.T, s submission) []byte {
	t.Helper()
	b, err := os.ReadFile(c.sentFiles[s.id])
	if err != nil {
		t.Fatalf("the script recorded nothing it sent: %v", err)
	}
	return b
}
