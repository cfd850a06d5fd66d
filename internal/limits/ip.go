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
	changed  chan struct{} // closed when an attempt ends

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

// authWait bounds how long an AUTH attempt waits for a verification slot.
const authWait = 30 * time.Second

// AuthBegin admits one AUTH attempt from addr, or refuses it (false) once
// the failures recorded within the window reach the limit. At most as many
// attempts as failures remain allowed are verified at once; the others wait
// for a slot (up to authWait): so a burst of parallel guesses cannot all be
// verified before the first failure is recorded, while a burst of good
// logins (an application opening many connections) only queues briefly.
// done reports the attempt's result exactly once. A success does not clear
// the address's failures: one valid password must not let its owner guess
// other clients' passwords without limit.
func (p *PerIP) AuthBegin(addr string, now time.Time) (done func(ok bool), admitted bool) {
	deadline := time.NewTimer(authWait)
	defer deadline.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxFailures <= 0 {
		return func(bool) {}, true
	}
	for {
		r := p.recordLocked(addr, now)
		if r.count >= p.maxFailures {
			return nil, false
		}
		if r.count+r.inFlight < p.maxFailures {
			r.inFlight++
			return p.doneFunc(r), true
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		p.mu.Unlock()
		select {
		case <-changed:
			p.mu.Lock()
		case <-deadline.C:
			p.mu.Lock()
			return nil, false
		}
		now = time.Now()
	}
}

// recordLocked returns addr's record, starting a new window when the last
// one is over.
func (p *PerIP) recordLocked(addr string, now time.Time) *failureRecord {
	r := p.failures[addr]
	if r != nil && now.Sub(r.first) > p.window && r.inFlight == 0 {
		r.count, r.first = 0, now
	}
	if r == nil {
		if len(p.failures) > 100_000 {
			p.pruneLocked(now) // bounded memory under a distributed attack
		}
		r = &failureRecord{first: now}
		p.failures[addr] = r
	}
	return r
}

func (p *PerIP) doneFunc(r *failureRecord) func(ok bool) {
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
			if r.changed != nil {
				close(r.changed) // wake the attempts waiting for a slot
				r.changed = nil
			}
		})
	}
}

func (p *PerIP) pruneLocked(now time.Time) {
	for a, r := range p.failures {
		if now.Sub(r.first) > p.window && r.inFlight == 0 && r.changed == nil {
			delete(p.failures, a)
		}
	}
}
