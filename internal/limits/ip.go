package limits

import (
	"net"
	"sync"
	"time"
)

// PerIP caps concurrent connections from one client address, and counts
// failed AUTH attempts per address so that password guessing is slowed to a
// halt: after MaxFailures within Window, AUTH fails temporarily until the
// window has passed.
type PerIP struct {
	mu          sync.Mutex
	maxConns    int
	maxFailures int
	window      time.Duration
	conns       map[string]int
	failures    map[string]*failureRecord
}

type failureRecord struct {
	count int
	first time.Time
}

// NewPerIP returns per-address limits (0 turns a limit off).
func NewPerIP(maxConns, maxFailures int, window time.Duration) *PerIP {
	return &PerIP{maxConns: maxConns, maxFailures: maxFailures, window: window, conns: map[string]int{}, failures: map[string]*failureRecord{}}
}

// Update changes the limits (a reload).
func (p *PerIP) Update(maxConns, maxFailures int, window time.Duration) {
	p.mu.Lock()
	p.maxConns, p.maxFailures, p.window = maxConns, maxFailures, window
	p.mu.Unlock()
}

func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	h, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return h
}

// Listener wraps ln so that a client address over its connection cap is
// answered reply() and closed.
func (p *PerIP) Listener(ln net.Listener, reply func() string) net.Listener {
	return &perIPListener{Listener: ln, p: p, reply: reply}
}

type perIPListener struct {
	net.Listener
	p     *PerIP
	reply func() string
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		l.p.mu.Lock()
		if l.p.maxConns > 0 && l.p.conns[ip] >= l.p.maxConns {
			l.p.mu.Unlock()
			go refuse(c, l.reply())
			continue
		}
		l.p.conns[ip]++
		l.p.mu.Unlock()
		return &ipConn{Conn: c, p: l.p, ip: ip}, nil
	}
}

type ipConn struct {
	net.Conn
	p    *PerIP
	ip   string
	once sync.Once
}

func (c *ipConn) Close() error {
	c.once.Do(func() {
		c.p.mu.Lock()
		if c.p.conns[c.ip]--; c.p.conns[c.ip] <= 0 {
			delete(c.p.conns, c.ip)
		}
		c.p.mu.Unlock()
	})
	return c.Conn.Close()
}

// AuthBlocked reports whether AUTH from addr is refused for now.
func (p *PerIP) AuthBlocked(addr string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxFailures <= 0 {
		return false
	}
	r := p.failures[addr]
	if r == nil {
		return false
	}
	if now.Sub(r.first) > p.window {
		delete(p.failures, addr)
		return false
	}
	return r.count >= p.maxFailures
}

// AuthFailed records a failed AUTH from addr.
func (p *PerIP) AuthFailed(addr string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxFailures <= 0 {
		return
	}
	r := p.failures[addr]
	if r == nil || now.Sub(r.first) > p.window {
		if len(p.failures) > 100_000 {
			p.pruneLocked(now) // bounded memory under a distributed attack
		}
		r = &failureRecord{first: now}
		p.failures[addr] = r
	}
	r.count++
}

// AuthSucceeded forgets the failures of addr.
func (p *PerIP) AuthSucceeded(addr string) {
	p.mu.Lock()
	delete(p.failures, addr)
	p.mu.Unlock()
}

func (p *PerIP) pruneLocked(now time.Time) {
	for a, r := range p.failures {
		if now.Sub(r.first) > p.window {
			delete(p.failures, a)
		}
	}
}
