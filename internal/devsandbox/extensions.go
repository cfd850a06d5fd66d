package devsandbox

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
)

// Extensions the sandbox's SMTP server offers by default, as
// smtp.office365.com does (smtp.gmail.com offers all but DSN);
// Options.Without turns each off to play a provider without it.
const (
	Ext8BitMIME   = "8BITMIME"
	ExtSMTPUTF8   = "SMTPUTF8"
	ExtDSN        = "DSN"
	ExtPipelining = "PIPELINING"
)

// without reports whether list names ext.
func without(list []string, ext string) bool {
	for _, e := range list {
		if strings.EqualFold(e, ext) {
			return true
		}
	}
	return false
}

// unofferedListener serves a provider without 8BITMIME or PIPELINING,
// which go-smtp always offers: the listener's connections take TLS over
// from it (implicit, or STARTTLS, which they answer themselves) and drop
// the extensions' lines from every EHLO reply: go-smtp speaks plaintext
// to them.
type unofferedListener struct {
	net.Listener
	tls      *tls.Config
	implicit bool
	// drop holds the EHLO reply lines to leave out ("250-8BITMIME\r\n").
	drop map[string]bool
}

func (l unofferedListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &unofferedConn{Conn: raw, raw: raw, tls: l.tls, drop: l.drop}
	if l.implicit {
		c.Conn, c.secure = tls.Server(raw, l.tls), true
	}
	return c, nil
}

type unofferedConn struct {
	net.Conn // raw, then TLS once it is up
	raw      net.Conn
	tls      *tls.Config
	drop     map[string]bool
	mu       sync.Mutex
	secure   bool
}

// Read answers STARTTLS itself (RFC 3207) and hands go-smtp the
// decrypted stream. go-smtp reads one command at a time before TLS: a
// client waits for each reply.
func (c *unofferedConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		conn, secure := c.Conn, c.secure
		c.mu.Unlock()
		n, err := conn.Read(p)
		if secure || n == 0 || !strings.EqualFold(strings.TrimSpace(string(p[:n])), "STARTTLS") {
			return n, err
		}
		if _, err := io.WriteString(c.raw, "220 2.0.0 Ready to start TLS\r\n"); err != nil {
			return 0, err
		}
		tc := tls.Server(c.raw, c.tls)
		if err := tc.Handshake(); err != nil {
			return 0, err
		}
		c.mu.Lock()
		c.Conn, c.secure = tc, true
		c.mu.Unlock()
	}
}

// Write drops the unoffered extensions' lines of EHLO replies and, before
// TLS, offers STARTTLS where go-smtp writes its first extension line,
// PIPELINING. go-smtp writes (and flushes) each reply line on its own.
func (c *unofferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	conn, secure := c.Conn, c.secure
	c.mu.Unlock()
	line := string(p)
	if !c.drop[line] && (secure || line != pipeliningLine) {
		return conn.Write(p)
	}
	var out string
	if !c.drop[line] {
		out = line
	}
	if !secure && line == pipeliningLine {
		out += "250-STARTTLS\r\n"
	}
	if _, err := io.WriteString(conn, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pipeliningLine is go-smtp's first extension line of an EHLO reply.
const pipeliningLine = "250-PIPELINING\r\n"

func (c *unofferedConn) Close() error {
	c.mu.Lock()
	conn := c.Conn
	c.mu.Unlock()
	return conn.Close()
}
