package admin

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"time"
)

// Wrong tokens are limited per client (README "Operator console"): after
// failLimit of them within failWindow, the client's wrong tokens are
// answered 429 until the window ends, and still counted. The right token
// is always let in: a stranger who can reach the console must not be
// able to lock the operators out by failing on purpose from their
// address (or from a proxy they share). Guessing is no way in anyway:
// tokens are long random strings (config.MinAdminTokenLength and up), so
// what the throttle limits is the noise of a flood in the audit log (its
// first failLimit wrong tokens a window, then one line at each power of
// ten: Server.wrongToken) and the work it costs.
const (
	failLimit  = 10
	failWindow = time.Minute
	// maxClients bounds the table; beyond it the oldest windows are
	// dropped first (those that ended, then those closest to ending),
	// so that flooding it from many addresses unblocks nobody else.
	maxClients = 8192
)

// throttle counts each client's events (wrong tokens; for
// Server.misdirected, requests refused by checkHost) in windows of
// failWindow from the client's first, in a table of at most maxClients.
type throttle struct {
	mu      sync.Mutex
	clients map[string]*list.Element // of *failures, in order
	// order holds the windows by their start, oldest at the front.
	order *list.List
}

type failures struct {
	client string
	start  time.Time
	n      int
}

func newThrottle() *throttle {
	return &throttle{clients: map[string]*list.Element{}, order: list.New()}
}

// fail counts an event (a wrong token) of client; n is the client's
// count in its window, which ends at until. For wrong tokens, n >
// failLimit: the client is blocked.
func (t *throttle) fail(client string, now time.Time) (n int, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.clients[client]; e != nil {
		f := e.Value.(*failures)
		if now.Sub(f.start) < failWindow {
			f.n++
			return f.n, f.start.Add(failWindow)
		}
		t.order.Remove(e)
		delete(t.clients, client)
	}
	t.makeRoom(now)
	t.clients[client] = t.order.PushBack(&failures{client: client, start: now, n: 1})
	return 1, now.Add(failWindow)
}

// makeRoom drops the windows that ended and, while the table is full,
// the oldest ones; each window is dropped once, so a failure costs O(1)
// amortised.
func (t *throttle) makeRoom(now time.Time) {
	for e := t.order.Front(); e != nil; e = t.order.Front() {
		f := e.Value.(*failures)
		if len(t.clients) < maxClients && now.Sub(f.start) < failWindow {
			return
		}
		t.order.Remove(e)
		delete(t.clients, f.client)
	}
}

// clientKey is who a request comes from for the throttle: its IP
// address, or the /64 network of an IPv6 address (one host usually has a
// whole /64 to pick addresses from).
func clientKey(r *http.Request) string { return ClientKey(r.RemoteAddr) }

// ClientKey is the client of a remote address ("host:port") as the
// console counts them: the IP address, or the /64 of an IPv6 address. The
// runtime's connection limits use it too.
func ClientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
