// Package limits holds the relay's protections: caps on concurrency,
// rate limits, quotas and circuit breakers.
package limits

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// SessionLimit caps concurrent client sessions across every listener that
// shares it. The cap can change while connections are open (a reload);
// sessions above a lowered cap finish normally.
type SessionLimit struct {
	max      atomic.Int64 // 0: no cap
	inUse    atomic.Int64
	rejected atomic.Uint64
}

// NewSessionLimit returns a limit of n concurrent sessions (n <= 0: none).
func NewSessionLimit(n int) *SessionLimit {
	l := &SessionLimit{}
	l.SetMax(n)
	return l
}

// SetMax changes the cap (n <= 0 removes it).
func (l *SessionLimit) SetMax(n int) {
	if n < 0 {
		n = 0
	}
	l.max.Store(int64(n))
}

// Rejected returns how many connections were turned away.
func (l *SessionLimit) Rejected() uint64 { return l.rejected.Load() }

// InUse returns the number of sessions holding a slot.
func (l *SessionLimit) InUse() int { return int(l.inUse.Load()) }

func (l *SessionLimit) tryAcquire() bool {
	n := l.inUse.Add(1)
	if max := l.max.Load(); max > 0 && n > max {
		l.inUse.Add(-1)
		return false
	}
	return true
}

func (l *SessionLimit) release() { l.inUse.Add(-1) }

// Listener wraps ln so that connections beyond the limit are answered with
// reply() (a complete SMTP line, such as "421 4.3.2 ...\r\n") and closed
// without reaching the SMTP server; reply returns "" for listeners that
// speak TLS from the first byte, where plaintext would be garbage. A
// refused connection costs one short-lived goroutine and no buffer.
func (l *SessionLimit) Listener(ln net.Listener, reply func() string) net.Listener {
	return &limitedListener{Listener: ln, limit: l, reply: reply}
}

type limitedListener struct {
	net.Listener
	limit *SessionLimit
	reply func() string
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.limit.tryAcquire() {
			return &limitedConn{Conn: c, release: ll.limit.release}, nil
		}
		ll.limit.rejected.Add(1)
		go refuse(c, ll.reply())
	}
}

func refuse(c net.Conn, reply string) {
	if reply != "" {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte(reply))
	}
	_ = c.Close()
}

// limitedConn gives its slot back exactly once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
