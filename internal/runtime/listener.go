package runtime

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
// handoff listener.
type generation struct {
	cfg     *config.Listener
	srv     *smtp.Server
	handoff *handoff
	tls     *tls.Config

	// conns are the generation's open connections: go-smtp cannot close
	// them once a graceful Shutdown started, so we keep our own handles.
	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
}

// trackedConn removes itself from its generation when closed.
type trackedConn struct {
	net.Conn
	g    *generation
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.g.connMu.Lock()
		delete(c.g.conns, c)
		c.g.connMu.Unlock()
	})
	return c.Conn.Close()
}

func (g *generation) track(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, g: g}
	g.connMu.Lock()
	if g.conns == nil {
		g.conns = map[*trackedConn]struct{}{}
	}
	g.conns[tc] = struct{}{}
	g.connMu.Unlock()
	return tc
}

// closeConns closes every open connection of the generation.
func (g *generation) closeConns() {
	g.connMu.Lock()
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.connMu.Unlock()
	for _, c := range conns {
		c.Close()
	}
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
		g.connMu.Lock()
		delete(g.conns, tc)
		g.connMu.Unlock()
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
