package admin

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Browser sessions live in memory: a restart signs everyone out. A
// session ends after sessionIdle without a request, after sessionMax in
// any case, at logout, or as soon as the token it was made with is no
// longer a configured token (a rotation in Vault signs out its sessions).
const (
	sessionIdle = 12 * time.Hour
	sessionMax  = 7 * 24 * time.Hour
	// maxSessions bounds memory; the least recently used goes first.
	maxSessions = 1000
)

// session is one signed-in browser.
type session struct {
	id   string // the cookie's value: 256 random bits
	csrf string // the forms' token: 256 random bits, bound to the session
	// token is the hash of the token the operator signed in with; the
	// session's scope is that token's scope now.
	token tokenHash
	// tls: the session was made over TLS; it is taken only over TLS
	// (and one made over plain HTTP only over plain HTTP), see get.
	tls           bool
	created, seen time.Time
	flash         *flash // shown once by the next page
}

// flash is the outcome of a form post, shown on the page it redirects to.
type flash struct {
	OK   bool
	Text string
}

type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
}

func newSessions() *sessions { return &sessions{byID: map[string]*session{}} }

// create makes the session of a sign-in with the token of hash tok over
// TLS or not (tls).
func (ss *sessions) create(tok tokenHash, tls bool, now time.Time) *session {
	s := &session{id: randomToken(), csrf: randomToken(), token: tok, tls: tls, created: now, seen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.expire(now)
	if len(ss.byID) >= maxSessions {
		ss.dropLeastRecent()
	}
	ss.byID[s.id] = s
	return s
}

// get returns the live session with that ID, presented over TLS or not
// (tls), and marks it used; or nil. A session presented in the other
// mode than it was made in ends: a plain-HTTP session's ID has crossed
// the network in clear and must not open the console over TLS (once a
// reload turns TLS on, say), and a TLS session's ID presented over plain
// HTTP has just done so.
func (ss *sessions) get(id string, tls bool, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[id]
	if s == nil {
		return nil
	}
	if expired(s, now) || s.tls != tls {
		delete(ss.byID, id)
		return nil
	}
	s.seen = now
	return s
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

// setFlash and takeFlash pass a post's outcome to the next page.
func (ss *sessions) setFlash(s *session, f flash) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s.flash = &f
}

func (ss *sessions) takeFlash(s *session) *flash {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

func expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) >= sessionIdle || now.Sub(s.created) >= sessionMax
}

func (ss *sessions) expire(now time.Time) {
	for id, s := range ss.byID {
		if expired(s, now) {
			delete(ss.byID, id)
		}
	}
}

func (ss *sessions) dropLeastRecent() {
	var oldest *session
	for _, s := range ss.byID {
		if oldest == nil || s.seen.Before(oldest.seen) {
			oldest = s
		}
	}
	if oldest != nil {
		delete(ss.byID, oldest.id)
	}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// cookieName is the session cookie's name for r: over TLS it carries
// the __Host- prefix, which browsers accept only with Secure, Path=/ and
// no Domain, so no other site or subdomain can set or shadow it. Each
// request decides by its own connection: a reload may switch the
// console's listener between TLS and plain HTTP under the same Server
// (whose sessions survive). The name only tells a browser's two cookies
// apart; what keeps a plain-HTTP session off TLS (and the reverse) is
// the mode the session records (sessions.get), since anyone may send
// any value under either name.
func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return "__Host-oauthrelay_session"
	}
	return "oauthrelay_session"
}

// sessionCookie sets (value != "") or clears the session cookie:
// HttpOnly (no script reads it), SameSite=Strict (no other site's page
// sends it), Secure over TLS; no Expires, so it ends with the browser,
// and the server ends it sooner (sessionIdle).
func sessionCookie(w http.ResponseWriter, r *http.Request, value string) {
	c := &http.Cookie{Name: cookieName(r), Value: value, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
	if value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}
