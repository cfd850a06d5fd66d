package admin

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// visit is a signed-in browser's request.
type visit struct {
	p    principal
	sess *session
}

type pageFunc func(w http.ResponseWriter, r *http.Request, v *visit)

// maxForm bounds a form post's body: the console's forms are tiny.
const maxForm = 64 << 10

// page serves a page to a signed-in browser; others are sent to the
// login page. Form posts must come from the console's own pages: from
// the same origin, with the session's CSRF token.
func (s *Server) page(h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.visitOf(w, r)
		if !ok {
			return
		}
		if v == nil {
			next := ""
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				next = "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, "/login"+next, http.StatusSeeOther)
			return
		}
		keepAlive(w)
		if r.Method == http.MethodPost && !s.formAllowed(w, r, v) {
			return
		}
		h(w, r, v)
	})
}

// visitOf finds the request's session and its scope under the current
// tokens: nil when there is none, or when its token is no longer
// configured (the session ends then). False when it answered already.
func (s *Server) visitOf(w http.ResponseWriter, r *http.Request) (*visit, bool) {
	c, err := r.Cookie(cookieName(r))
	if err != nil || c.Value == "" {
		return nil, true
	}
	sess := s.sessions.get(c.Value, r.TLS != nil, s.now())
	if sess == nil {
		return nil, true
	}
	toks, err := s.opts.Tokens()
	if err != nil {
		s.log.Error("the admin tokens are unavailable", "error", err)
		s.renderError(w, nil, http.StatusServiceUnavailable, "The console's tokens are unavailable; see the relay's log.")
		return nil, false
	}
	sc := scopeOf(sess.token, toks)
	if sc == scopeNone {
		s.sessions.drop(sess.id)
		return nil, true
	}
	return &visit{p: principal{scope: sc, tokenID: sess.token.id(), via: "console"}, sess: sess}, true
}

// formAllowed checks a form post of a signed-in browser: same origin and
// the session's CSRF token. SameSite=Strict already keeps the cookie off
// other sites' requests; these checks hold even where it would not (an
// old browser, a sibling site on the same host name). A refused post
// closes its connection: a forged form may come from anywhere.
func (s *Server) formAllowed(w http.ResponseWriter, r *http.Request, v *visit) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		hangUp(w)
		s.renderError(w, v, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	token := r.PostFormValue("csrf")
	if sameOrigin(r) && subtle.ConstantTimeCompare([]byte(token), []byte(v.sess.csrf)) == 1 {
		return true
	}
	hangUp(w)
	s.auditLog(r, v.p, auditEvent{action: "form", target: r.URL.Path, outcome: "refused", detail: "not from the console's own page (origin or CSRF token)"})
	s.renderError(w, v, http.StatusForbidden, "The form was refused: it did not come from this console's own page. Reload the page and try again.")
	return false
}

// sameOrigin refuses a request whose Sec-Fetch-Site, Origin or Referer
// names another site. A browser with "Referrer-Policy: no-referrer" (the
// console's) sends "Origin: null" and no Referer with its own posts;
// those carry no information, and the CSRF token decides.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		return hostOf(o) == r.Host
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		return hostOf(ref) == r.Host
	}
	return true
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// localPath returns p when it is a path on this console ("/queue?x=1"),
// else def: a redirect target from a form must not lead elsewhere
// ("//evil.example", "https://…", "/\evil").
func localPath(p, def string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return def
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return def
	}
	return p
}

// loginView is the login page's content.
type loginView struct {
	Next, Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, nil, http.StatusOK, "login", "Sign in", "", loginView{Next: localPath(r.URL.Query().Get("next"), "/")})
}

// login signs a browser in with a token pasted into the form: a new
// session (never one the browser brought along) bound to the token's
// hash.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	_ = r.ParseForm()
	next := localPath(r.PostFormValue("next"), "/")
	fail := func(status int, msg string) {
		s.render(w, nil, status, "login", "Sign in", "", loginView{Next: next, Error: msg})
	}
	p := principal{via: "console"}
	if !sameOrigin(r) {
		s.auditLog(r, p, auditEvent{action: "login", outcome: "refused", detail: "the form came from another site"})
		fail(http.StatusForbidden, "The sign-in form must come from this console's own page.")
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" {
		fail(http.StatusBadRequest, "Paste a token.")
		return
	}
	toks, err := s.opts.Tokens()
	if err != nil {
		s.log.Error("the admin tokens are unavailable", "error", err)
		fail(http.StatusServiceUnavailable, "The console's tokens are unavailable; see the relay's log.")
		return
	}
	h := hashToken(tok)
	p.scope, p.tokenID = scopeOf(h, toks), h.id()
	if p.scope == scopeNone {
		if left, blocked := s.wrongToken(r, h, "login", "console"); blocked {
			lockedOut(w, left)
			fail(http.StatusTooManyRequests, "Too many failed sign-ins from this address: wrong tokens are refused until the minute is over. The right token still signs in.")
			return
		}
		fail(http.StatusUnauthorized, "That token is not valid.")
		return
	}
	if c, err := r.Cookie(cookieName(r)); err == nil {
		s.sessions.drop(c.Value)
	}
	sess := s.sessions.create(h, r.TLS != nil, s.now())
	sessionCookie(w, r, sess.id)
	keepAlive(w) // the browser follows the redirect on it
	s.auditLog(r, p, auditEvent{action: "login", outcome: "success"})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, v *visit) {
	s.sessions.drop(v.sess.id)
	sessionCookie(w, r, "")
	s.auditLog(r, v.p, auditEvent{action: "logout", outcome: "success"})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
