package server

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// consoleListener serves each connection over TLS or in clear by the
// console's setting when it arrives, so that a reload turning TLS on or
// off keeps the socket. It tracks its connections: when the setting
// changes, those of the old one are closed, so that no session cookie
// keeps crossing the network in clear on a kept-alive connection after
// the operator turned TLS on.
type consoleListener struct {
	net.Listener
	tls   atomic.Pointer[tls.Config] // nil: plain HTTP
	mu    sync.Mutex
	conns map[*consoleConn]struct{}
}

func newConsoleListener(ln net.Listener, cfg *tls.Config) *consoleListener {
	l := &consoleListener{Listener: ln, conns: map[*consoleConn]struct{}{}}
	l.tls.Store(cfg)
	return l
}

func (l *consoleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &consoleConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[cc] = struct{}{}
	l.mu.Unlock()
	if cfg := l.tls.Load(); cfg != nil {
		// The configuration is read at each handshake, so that a reload
		// that keeps TLS on applies its new certificate settings at once.
		return tls.Server(cc, &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return l.tls.Load(), nil },
		}), nil
	}
	return cc, nil
}

// setTLS installs the TLS configuration of a reload (nil: plain HTTP) and
// reports whether the console switched between TLS and clear; it then
// closes the connections made under the old setting.
func (l *consoleListener) setTLS(cfg *tls.Config) bool {
	old := l.tls.Swap(cfg)
	if (old == nil) == (cfg == nil) {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Conn.Close()
	}
	return true
}

// consoleConn leaves its listener's table when closed.
type consoleConn struct {
	net.Conn
	l    *consoleListener
	once sync.Once
}

func (c *consoleConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
