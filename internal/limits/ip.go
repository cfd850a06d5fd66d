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
	count    int // failures since first
	inFlight int // attempts being verified now
	first    time.Time
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

// AuthBegin admits one AUTH attempt from addr, or refuses it (false) when
// the failures recorded within the window plus the attempts still being
// verified reach the limit: counting attempts in flight keeps a burst of
// parallel guesses from all being verified before the first failure is
// recorded. done reports the attempt's result exactly once. A success does
// not clear the address's failures: one valid password must not let its
// owner guess other clients' passwords without limit.
func (p *PerIP) AuthBegin(addr string, now time.Time) (done func(ok bool), admitted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxFailures <= 0 {
		return func(bool) {}, true
	}
	r := p.failures[addr]
	if r != nil && now.Sub(r.first) > p.window && r.inFlight == 0 {
		delete(p.failures, addr)
		r = nil
	}
	if r == nil {
		if len(p.failures) > 100_000 {
			p.pruneLocked(now) // bounded memory under a distributed attack
		}
		r = &failureRecord{first: now}
		p.failures[addr] = r
	}
	if r.count+r.inFlight >= p.maxFailures {
		return nil, false
	}
	r.inFlight++
	var once sync.Once
	return func(ok bool) {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			r.inFlight--
			if !ok {
				if time.Since(r.first) > p.window && r.count == 0 {
					r.first = time.Now()
				}
				r.count++
			}
		})
	}, true
}

func (p *PerIP) pruneLocked(now time.Time) {
	for a, r := range p.failures {
		if now.Sub(r.first) > p.window && r.inFlight == 0 {
			delete(p.failures, a)
		}
	}
}
