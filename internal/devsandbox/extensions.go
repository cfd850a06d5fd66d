package devsandbox

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
)

// Extensions the sandbox's SMTP server offers by default, as
// smtp.office365.com does; Options.Without turns each off to play a
// provider without it.
const (
	Ext8BitMIME = "8BITMIME"
	ExtSMTPUTF8 = "SMTPUTF8"
	ExtDSN      = "DSN"
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

// no8BitMIMEListener serves a provider without 8BITMIME. go-smtp always
// offers 8BITMIME, so the listener's connections take TLS over from it
// (implicit, or STARTTLS, which they answer themselves) and drop the
// 8BITMIME line from every EHLO reply: go-smtp speaks plaintext to them.
type no8BitMIMEListener struct {
	net.Listener
	tls      *tls.Config
	implicit bool
}

func (l no8BitMIMEListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &no8BitMIMEConn{Conn: raw, raw: raw, tls: l.tls}
	if l.implicit {
		c.Conn, c.secure = tls.Server(raw, l.tls), true
	}
	return c, nil
}

type no8BitMIMEConn struct {
	net.Conn // raw, then TLS once it is up
	raw      net.Conn
	tls      *tls.Config
	mu       sync.Mutex
	secure   bool
}

// Read answers STARTTLS itself (RFC 3207) and hands go-smtp the
// decrypted stream. go-smtp reads one command at a time before TLS: a
// client waits for each reply.
func (c *no8BitMIMEConn) Read(p []byte) (int, error) {
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

// Write drops the 8BITMIME line of EHLO replies and, before TLS, offers
// STARTTLS. go-smtp writes (and flushes) each reply line on its own.
func (c *no8BitMIMEConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	conn, secure := c.Conn, c.secure
	c.mu.Unlock()
	switch string(p) {
	case "250-8BITMIME\r\n":
		return len(p), nil
	case "250-PIPELINING\r\n":
		if !secure {
			if _, err := conn.Write([]byte("250-PIPELINING\r\n250-STARTTLS\r\n")); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return conn.Write(p)
}

func (c *no8BitMIMEConn) Close() error {
	c.mu.Lock()
	conn := c.Conn
	c.mu.Unlock()
	return conn.Close()
}
