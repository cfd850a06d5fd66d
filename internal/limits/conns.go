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
// shares it. A zero or negative size means no cap.
type SessionLimit struct {
	slots    chan struct{}
	rejected atomic.Uint64
}

// NewSessionLimit returns a limit of n concurrent sessions.
func NewSessionLimit(n int) *SessionLimit {
	if n <= 0 {
		return &SessionLimit{}
	}
	return &SessionLimit{slots: make(chan struct{}, n)}
}

// Rejected returns how many connections were turned away.
func (l *SessionLimit) Rejected() uint64 { return l.rejected.Load() }

// InUse returns the number of sessions holding a slot.
func (l *SessionLimit) InUse() int { return len(l.slots) }

// Listener wraps ln so that connections beyond the limit are answered with
// reply (a complete SMTP line, such as "421 4.3.2 ...\r\n") and closed
// without reaching the SMTP server; pass an empty reply for listeners
// that speak TLS from the first byte, where plaintext would be garbage.
// No goroutine or buffer is kept for a refused connection beyond a short
// write deadline.
func (l *SessionLimit) Listener(ln net.Listener, reply string) net.Listener {
	if l.slots == nil {
		return ln
	}
	return &limitedListener{Listener: ln, limit: l, reply: reply}
}

type limitedListener struct {
	net.Listener
	limit *SessionLimit
	reply string
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case ll.limit.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: ll.limit.release}, nil
		default:
			ll.limit.rejected.Add(1)
			go refuse(c, ll.reply)
		}
	}
}

func refuse(c net.Conn, reply string) {
	if reply != "" {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte(reply))
	}
	_ = c.Close()
}

func (l *SessionLimit) release() { <-l.slots }

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
