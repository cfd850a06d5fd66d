package upstream

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpClient is the client side of one upstream SMTP session (RFC 5321),
// written for what the relay needs and general-purpose libraries do not
// give it: our EHLO name before STARTTLS, RSET without a new EHLO
// (RFC 5321 §4.1.1.5 keeps the session's state), and every failure told
// apart — the provider's reply, a broken transport, a refusal of ours
// before anything was sent, or a connection lost after the final dot.
type smtpClient struct {
	conn    net.Conn
	text    *textproto.Conn
	limit   *responseLimit
	ext     map[string]string
	timeout time.Duration
}

// maxResponseBytes bounds one reply (a provider cannot make the relay
// buffer without end).
const maxResponseBytes = 64 << 10

// errLocal marks a request the client refuses to send (it would not be a
// valid SMTP command); the connection stays usable.
var errLocal = errors.New("refused before sending")

// lostAfterDot is a DATA failure after the final dot was written: the
// provider may have accepted the message.
type lostAfterDot struct{ err error }

func (e *lostAfterDot) Error() string { return e.err.Error() }
func (e *lostAfterDot) Unwrap() error { return e.err }

func newSMTPClient(conn net.Conn, timeout time.Duration) *smtpClient {
	c := &smtpClient{timeout: timeout}
	c.setConn(conn)
	return c
}

func (c *smtpClient) setConn(conn net.Conn) {
	c.conn = conn
	c.limit = &responseLimit{r: conn}
	c.text = textproto.NewConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{c.limit, conn, conn})
}

// responseLimit caps the bytes read for one reply.
type responseLimit struct {
	r    io.Reader
	left int
}

func (l *responseLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errors.New("upstream reply too long")
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= n
	return n, err
}

func (c *smtpClient) deadline() { _ = c.conn.SetDeadline(time.Now().Add(c.timeout)) }

// readReply reads one reply; a 4xx/5xx (or an unexpected code) comes back
// as an *smtp.SMTPError.
func (c *smtpClient) readReply(expect int) (string, error) {
	c.limit.left = maxResponseBytes
	c.deadline()
	code, msg, err := c.text.ReadResponse(0)
	if err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) {
			return "", err
		}
	}
	if code == expect {
		return msg, nil
	}
	return "", toReply(code, msg)
}

// cmd sends one command line and reads its reply.
func (c *smtpClient) cmd(expect int, line string) (string, error) {
	if err := c.sendGroup(line); err != nil {
		return "", err
	}
	return c.readReply(expect)
}

// sendGroup writes command lines in one write: a group of pipelined
// commands (RFC 2920 §3.1) when there are several. A line with CR or LF
// is refused before anything is sent.
func (c *smtpClient) sendGroup(lines ...string) error {
	for _, line := range lines {
		if strings.ContainsAny(line, "\r\n") {
			return fmt.Errorf("%w: a command line must not contain CR or LF", errLocal)
		}
	}
	c.deadline()
	w := c.text.W
	for _, line := range lines {
		_, _ = w.WriteString(line)
		_, _ = w.WriteString("\r\n")
	}
	return w.Flush()
}

// toReply turns a reply into an *smtp.SMTPError, parsing the enhanced
// status code (RFC 2034 / RFC 3463) that providers put on every line.
func toReply(code int, msg string) *smtp.SMTPError {
	r := &smtp.SMTPError{Code: code, Message: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return r
	}
	var ec smtp.EnhancedCode
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return r
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return r
		}
		ec[i] = n
	}
	r.EnhancedCode = ec
	r.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return r
}

// greet reads the server's 220 greeting.
func (c *smtpClient) greet() error {
	_, err := c.readReply(220)
	return err
}

// hello sends EHLO (HELO when the server does not know EHLO) and records
// the extensions.
func (c *smtpClient) hello(name string) error {
	msg, err := c.cmd(250, "EHLO "+name)
	var se *smtp.SMTPError
	if errors.As(err, &se) && (se.Code == 500 || se.Code == 502) {
		c.ext = map[string]string{}
		_, err = c.cmd(250, "HELO "+name)
		return err
	}
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

func (c *smtpClient) extension(name string) (string, bool) {
	v, ok := c.ext[name]
	return v, ok
}

// startTLS upgrades the connection (RFC 3207); the caller says EHLO again.
func (c *smtpClient) startTLS(cfg *tls.Config) error {
	if _, ok := c.extension("STARTTLS"); !ok {
		return errors.New("the server does not offer STARTTLS")
	}
	if _, err := c.cmd(220, "STARTTLS"); err != nil {
		return err
	}
	tc := tls.Client(c.conn, cfg)
	c.deadline()
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.setConn(tc)
	c.ext = nil
	return nil
}

// auth runs a SASL exchange (RFC 4954).
func (c *smtpClient) auth(a sasl.Client) error {
	mech, ir, err := a.Start()
	if err != nil {
		return err
	}
	line := "AUTH " + mech
	if ir != nil {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "="
		}
		line += " " + enc
	}
	c.deadline()
	if err := c.text.PrintfLine("%s", line); err != nil {
		return err
	}
	for {
		_, err := c.readReply(235)
		if err == nil {
			return nil
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 334 {
			return err
		}
		challenge, derr := base64.StdEncoding.DecodeString(se.Message)
		if derr != nil {
			challenge = []byte(se.Message)
		}
		resp, nerr := a.Next(challenge)
		if nerr != nil {
			_ = c.text.PrintfLine("*")
			if _, err := c.readReply(501); err != nil {
				var se *smtp.SMTPError
				if !errors.As(err, &se) {
					return err
				}
			}
			return nerr
		}
		if err := c.text.PrintfLine("%s", base64.StdEncoding.EncodeToString(resp)); err != nil {
			return err
		}
	}
}

// has reports whether the server offered an extension in its EHLO reply.
func (c *smtpClient) has(name string) bool {
	_, ok := c.extension(name)
	return ok
}

func withParams(line string, params []string) string {
	for _, p := range params {
		line += " " + p
	}
	return line
}

// rcptReply reads the reply to RCPT: 251 (RFC 5321 §3.4, the server will
// forward) accepts the recipient as 250 does.
func (c *smtpClient) rcptReply() error {
	_, err := c.readReply(250)
	if se, ok := err.(*smtp.SMTPError); ok && se.Code == 251 {
		return nil
	}
	return err
}

// data sends DATA (unless the server already answered it with 354: open)
// and the message, dot-stuffed (RFC 5321 §4.5.2), and returns the
// provider's acceptance text. A failure after the final dot was written
// is a *lostAfterDot.
func (c *smtpClient) data(msg io.Reader, open bool) (string, error) {
	if !open {
		if _, err := c.cmd(354, "DATA"); err != nil {
			return "", err
		}
	}
	w := c.text.DotWriter()
	src := &deadlineReader{r: msg, c: c}
	if _, err := io.Copy(w, src); err != nil {
		if src.err != nil {
			// The relay could not read its own copy of the message (a
			// spool or store failure): not the provider's fault.
			return "", &sourceError{src.err}
		}
		return "", err
	}
	c.deadline()
	if err := w.Close(); err != nil {
		return "", err
	}
	text, err := c.readReply(250)
	if err != nil {
		if _, reply := err.(*smtp.SMTPError); !reply {
			return "", &lostAfterDot{err}
		}
		return "", err
	}
	return text, nil
}

// deadlineReader extends the connection's deadline as the body flows, so a
// large message is bounded per chunk rather than as a whole.
type deadlineReader struct {
	r   io.Reader
	c   *smtpClient
	err error // the message's own read failure, if any
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.c.deadline()
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.err = err
	}
	return n, err
}

// sourceError is a failure to read the message being sent: the DATA
// transfer was cut off mid-body, so the connection cannot be reused, but
// the provider did nothing wrong.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "reading the message: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func (c *smtpClient) reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

func (c *smtpClient) quit() error {
	_, err := c.cmd(221, "QUIT")
	c.conn.Close()
	return err
}

func (c *smtpClient) close() error { return c.conn.Close() }
