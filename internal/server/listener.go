package server

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/relay"
)

// listener owns one listening socket. Its SMTP server is replaced on reload
// (new limits, new certificate) without closing the socket, so clients are
// never refused during a reload: the accept loop hands each connection to
// the current generation's server, and a retired generation drains its
// sessions in the background.
type listener struct {
	addr string
	ln   net.Listener
	log  hclog.Logger

	mu          sync.Mutex
	gen         *generation
	loopWG      sync.WaitGroup
	implicitTLS atomic.Bool // the current generation speaks TLS at once
	perIP       *limits.PerIP
}

// generation is one configuration of a listener: a go-smtp server fed by a
// handoff listener. The generation, not go-smtp, tracks its connections:
// go-smtp's Shutdown races with a Serve that is still starting, and it
// cannot wait for a server that was already shut down (a retired
// generation) — shutdown waits for every generation's sessions itself.
type generation struct {
	cfg     *config.Listener
	srv     *smtp.Server
	backend *relay.Backend
	handoff *handoff
	tls     *tls.Config
	// holdFor is how long a connection holds a reply (zero: maxHoldTime);
	// tests that count writes lengthen it, so that a slow machine does not
	// split what they check.
	holdFor time.Duration

	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	gone   *sync.Cond // signalled (with connMu) when a connection leaves conns
}

// trackedConn removes itself from its generation when closed. It also
// lets the session ask for the connection to be closed right after its
// next reply (a 421), tells the generation whether the session is idle,
// and holds the session's replies until it reads again (replyBuffer).
type trackedConn struct {
	net.Conn
	g               *generation
	once            sync.Once
	closeAfterWrite atomic.Bool
	idle            atomic.Pointer[func() bool]
	replies         replyBuffer
}

// Close sends the replies still held (the last one before a close is
// usually a 221 or 421 the client waits for) and closes the socket.
func (c *trackedConn) Close() error {
	_ = c.replies.flush()
	return c.close()
}

// abort closes the socket when the relay cuts the session off (the
// shutdown deadline passed): the held replies get a short moment to
// leave (a 250 for a message the provider accepted must not be lost,
// or the client sends it twice), and a client that does not read must
// not keep the relay waiting.
func (c *trackedConn) abort() error {
	c.replies.flushBeforeAbort()
	return c.close()
}

func (c *trackedConn) close() error {
	c.once.Do(func() { c.g.untrack(c) })
	return c.Conn.Close()
}

// Write holds p until the session next reads (or the buffer fills).
func (c *trackedConn) Write(p []byte) (int, error) {
	err := c.replies.hold(p)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read first sends the held replies: the session has answered every
// command it had read and now waits for the client (RFC 2920 §3.2).
func (c *trackedConn) Read(p []byte) (int, error) {
	if err := c.replies.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// SetWriteDeadline keeps the deadline of held replies (replyBuffer).
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	return c.replies.setWriteDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// CloseAfterNextWrite implements the relay's replyCloser.
func (c *trackedConn) CloseAfterNextWrite() { c.closeAfterWrite.Store(true) }

// AttachSession implements the relay's sessionAware.
func (c *trackedConn) AttachSession(idle func() bool) { c.idle.Store(&idle) }

// isIdle reports whether the connection's session is between
// transactions (or has not started one).
func (c *trackedConn) isIdle() bool {
	f := c.idle.Load()
	return f == nil || (*f)()
}

func (g *generation) track(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, g: g}
	tc.replies.out, tc.replies.holdFor = c, g.holdFor
	if tc.replies.holdFor == 0 {
		tc.replies.holdFor = maxHoldTime
	}
	g.connMu.Lock()
	if g.conns == nil {
		g.conns = map[*trackedConn]struct{}{}
		g.gone = sync.NewCond(&g.connMu)
	}
	g.conns[tc] = struct{}{}
	g.connMu.Unlock()
	return tc
}

// untrack forgets a connection: closed, or taken over by another
// generation.
func (g *generation) untrack(tc *trackedConn) {
	g.connMu.Lock()
	delete(g.conns, tc)
	if g.gone != nil {
		g.gone.Broadcast()
	}
	g.connMu.Unlock()
}

func (g *generation) snapshot() []*trackedConn {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	return conns
}

// closeConns closes every open connection of the generation, giving what
// their sessions still held only abortFlushTime to leave.
func (g *generation) closeConns() {
	for _, c := range g.snapshot() {
		c.abort()
	}
}

// closeIdle asks the generation's idle sessions to end: their next read
// times out, and go-smtp answers 421 and closes the connection. Sessions
// in a transaction are left to finish it.
func (g *generation) closeIdle() {
	for _, c := range g.snapshot() {
		if c.isIdle() {
			_ = c.SetReadDeadline(time.Now())
		}
	}
}

// drained returns a channel closed once every connection ended. (A
// WaitGroup would not do: connections may still be handed to a generation
// while someone waits for it to drain.)
func (g *generation) drained() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		g.connMu.Lock()
		for len(g.conns) > 0 {
			g.gone.Wait()
		}
		g.connMu.Unlock()
		close(ch)
	}()
	return ch
}

// handoff is a net.Listener whose connections come from the real
// listener's accept loop.
type handoff struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }

// offer passes c to the server; false means this handoff was retired first.
func (h *handoff) offer(c net.Conn) bool {
	select {
	case <-h.done:
		return false
	default:
	}
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

// openSocket binds a listener's address.
func openSocket(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

func (l *listener) current() *generation {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// start runs the accept loop.
func (l *listener) start() {
	l.loopWG.Add(1)
	go func() {
		defer l.loopWG.Done()
		var delay time.Duration
		for {
			c, err := l.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors and the like: back off, as
				// net/http does, instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed", "address", l.addr, "error", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			delay = 0
			l.dispatch(c)
		}
	}()
}

func (l *listener) dispatch(c net.Conn) {
	for {
		g := l.current()
		if g == nil {
			c.Close()
			return
		}
		tc := g.track(c)
		var conn net.Conn = tc
		if g.cfg.TLSMode == config.TLSImplicit {
			conn = tls.Server(tc, g.tls)
		}
		if g.handoff.offer(conn) {
			return
		}
		// Not taken: forget it here without closing the socket.
		g.untrack(tc)
		// The generation was replaced between current() and offer; the
		// next one takes the connection.
	}
}

// install makes g the generation that receives new connections and returns
// the one it replaced (nil at first).
func (l *listener) install(g *generation) *generation {
	g.handoff.addr = l.ln.Addr()
	go func() { _ = g.srv.Serve(g.handoff) }()
	l.implicitTLS.Store(g.cfg.TLSMode == config.TLSImplicit)
	l.perIP.Update(g.cfg.MaxConnectionsPerIP, g.cfg.MaxAuthFailures, g.cfg.AuthFailureWindow)
	l.mu.Lock()
	old := l.gen
	l.gen = g
	l.mu.Unlock()
	if old != nil {
		old.handoff.Close()
	}
	return old
}

// stopAccepting closes the socket and waits for the accept loop to end.
func (l *listener) stopAccepting() *generation {
	l.ln.Close()
	l.loopWG.Wait()
	l.mu.Lock()
	g := l.gen
	l.gen = nil
	l.mu.Unlock()
	if g != nil {
		g.handoff.Close()
	}
	return g
}

// loadListenerTLS builds a listener's TLS configuration (listenertls.go):
// certificate files are read now, so each generation picks up renewed ones;
// tls_cert/tls_key are served from get, the secrets store of the
// configuration the generation belongs to.
func loadListenerTLS(lc *config.Listener, get SecretGetter, log hclog.Logger) (*tls.Config, error) {
	return listenerTLSConfig(lc, get, log)
}

// sessions counts the connections the listener's current generation
// serves (the operator console's listener table).
func (l *listener) sessions() int {
	g := l.current()
	if g == nil {
		return 0
	}
	g.connMu.Lock()
	defer g.connMu.Unlock()
	return len(g.conns)
}
