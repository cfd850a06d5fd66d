package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/admin"
)

// The console's connection limits (README "Operator console"): enough
// for a few operators' browsers and scripts, while a client that opens
// thousands cannot exhaust the relay's file descriptors. A client is an
// IP address or an IPv6 /64, as for the login throttle. Connections
// that hold a slot without a request in progress (just opened, or kept
// alive between requests) give it up to a newcomer, oldest first: idle
// connections cannot keep the operators out.
const (
	maxConsoleConns          = 64
	maxConsoleConnsPerClient = 16
)

// consoleListener serves each connection over TLS or in clear by the
// console's setting when it arrives, so that a reload turning TLS on or
// off keeps the socket; it tracks the connections (their client and
// their http.ConnState) to enforce the limits above and so that, when
// the setting changes, the connections made under the old one close —
// at once when idle, after their answer when busy (the reload's own
// answer among them) — and no session cookie keeps crossing the network
// in clear on a kept-alive connection after the operator turned TLS on.
type consoleListener struct {
	net.Listener
	tls   atomic.Pointer[tls.Config] // nil: plain HTTP
	now   func() time.Time
	mu    sync.Mutex
	conns map[net.Conn]*consoleConn // by the connection handed to http.Server
	// perClient counts each client's connections.
	perClient map[string]int
}

func newConsoleListener(ln net.Listener, cfg *tls.Config) *consoleListener {
	l := &consoleListener{Listener: ln, now: time.Now, conns: map[net.Conn]*consoleConn{}, perClient: map[string]int{}}
	l.tls.Store(cfg)
	return l
}

// consoleConn is one accepted connection; it leaves its listener's table
// when closed.
type consoleConn struct {
	net.Conn
	l      *consoleListener
	served net.Conn // what http.Server holds: this, or a *tls.Conn over it
	client string
	tls    bool
	// state and since are the connection's http.ConnState and when it
	// entered it; doomed: close it once its answer is written.
	state  http.ConnState
	since  time.Time
	doomed bool
	once   sync.Once
}

func (l *consoleListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if served := l.admit(c); served != nil {
			return served, nil
		}
	}
}

// admit registers c, making room by closing the oldest connection
// without a request in progress when its client or the console is at
// its limit; nil (c closed) when every connection in the way is busy.
func (l *consoleListener) admit(c net.Conn) net.Conn {
	client := admin.ClientKey(c.RemoteAddr().String())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perClient[client] >= maxConsoleConnsPerClient && !l.evictLocked(client) ||
		len(l.conns) >= maxConsoleConns && !l.evictLocked("") {
		_ = c.Close()
		return nil
	}
	cfg := l.tls.Load()
	cc := &consoleConn{Conn: c, l: l, client: client, tls: cfg != nil, state: http.StateNew, since: l.now()}
	cc.served = cc
	if cfg != nil {
		// The configuration is read at each handshake, so that a reload
		// that keeps TLS on applies its new certificate settings at once.
		cc.served = tls.Server(cc, &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return l.tls.Load(), nil },
		})
	}
	l.conns[cc.served] = cc
	l.perClient[client]++
	return cc.served
}

// evictLocked closes the oldest connection without a request in progress
// (of client; "": of anyone) and reports whether there was one.
func (l *consoleListener) evictLocked(client string) bool {
	var oldest *consoleConn
	for _, c := range l.conns {
		if (client == "" || c.client == client) && c.state != http.StateActive && (oldest == nil || c.since.Before(oldest.since)) {
			oldest = c
		}
	}
	if oldest == nil {
		return false
	}
	l.forgetLocked(oldest)
	_ = oldest.Conn.Close()
	return true
}

func (l *consoleListener) forgetLocked(c *consoleConn) {
	if l.conns[c.served] != c {
		return
	}
	delete(l.conns, c.served)
	if l.perClient[c.client]--; l.perClient[c.client] <= 0 {
		delete(l.perClient, c.client)
	}
}

// connState is the http.Server's ConnState hook: it keeps each
// connection's state, and closes a doomed one once its answer is out.
func (l *consoleListener) connState(served net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.conns[served]
	if c == nil {
		return
	}
	c.state, c.since = state, l.now()
	if state == http.StateIdle && c.doomed {
		l.forgetLocked(c)
		_ = c.Conn.Close()
	}
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
	for _, c := range l.conns {
		switch {
		case c.tls == (cfg != nil):
		case c.state == http.StateActive:
			c.doomed = true
		default:
			l.forgetLocked(c)
			_ = c.Conn.Close()
		}
	}
	return true
}

func (c *consoleConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.forgetLocked(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
