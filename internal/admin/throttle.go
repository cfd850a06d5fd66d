package admin

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Failed authentications are limited per client so that tokens cannot be
// guessed quickly: after failLimit failures within failWindow, every
// attempt from that client (the right token too) is refused with 429
// until the window ends.
const (
	failLimit  = 10
	failWindow = time.Minute
	// maxClients bounds the table; beyond it, windows that ended are
	// dropped first, then the table starts over.
	maxClients = 8192
)

type throttle struct {
	mu      sync.Mutex
	clients map[string]*failures
}

type failures struct {
	start time.Time
	n     int
}

func newThrottle() *throttle { return &throttle{clients: map[string]*failures{}} }

// blocked reports whether client may not try now, and for how long.
func (t *throttle) blocked(client string, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.clients[client]
	if f == nil || f.n < failLimit {
		return false, 0
	}
	left := f.start.Add(failWindow).Sub(now)
	return left > 0, left
}

// fail counts a failed authentication of client; true when it is the one
// that blocks it.
func (t *throttle) fail(client string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.clients[client]
	if f == nil || now.Sub(f.start) >= failWindow {
		t.makeRoom(now)
		f = &failures{start: now}
		t.clients[client] = f
	}
	f.n++
	return f.n == failLimit
}

func (t *throttle) makeRoom(now time.Time) {
	if len(t.clients) < maxClients {
		return
	}
	for c, f := range t.clients {
		if now.Sub(f.start) >= failWindow {
			delete(t.clients, c)
		}
	}
	if len(t.clients) >= maxClients {
		clear(t.clients)
	}
}

// clientKey is who a request comes from for the throttle: its IP
// address, or the /64 network of an IPv6 address (one host usually has a
// whole /64 to pick addresses from).
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
