package admin

import (
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Options configure a Server.
type Options struct {
	// Tokens returns the current tokens; it is called for every request,
	// so a token rotated in Vault applies without a reload (and signs out
	// the sessions made with the old one). An error refuses the request
	// with 503.
	Tokens func() (Tokens, error)
	// Log is the console's logger; audit lines go to Log.Named("audit").
	// Nil: nothing is logged.
	Log hclog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Hosts returns the host names the console answers to besides IP
	// addresses, localhost and *.localhost (the admin block's hostnames;
	// compared case-insensitively, without a port or a trailing dot);
	// nil: none. Plain-HTTP requests are always checked; requests over
	// TLS only when it returns names (see checkHost). It is called for
	// every request, so that a reload applies at once: it must be cheap
	// and take no lock a reload holds.
	Hosts func() []string
	// SearchTimeout bounds each history search (0: DefaultSearchTimeout);
	// past it the search is cancelled and the operator told to narrow it.
	SearchTimeout time.Duration
}

// Server is the admin API and the web console. The caller runs the
// http.Server (its own listener, README "Operator console").
type Server struct {
	b        Backend
	opts     Options
	log      hclog.Logger
	audit    hclog.Logger
	sessions *sessions
	throttle *throttle
	// misdirected counts each client's refusals by checkHost, so that
	// only its first a minute is logged.
	misdirected *throttle
	searches    *searchLimiter
	pages       *pages
	handler     http.Handler
}

// New returns the console of b.
func New(b Backend, opts Options) *Server {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tokens == nil {
		opts.Tokens = func() (Tokens, error) { return Tokens{}, nil }
	}
	s := &Server{b: b, opts: opts, log: opts.Log, audit: opts.Log.Named("audit"),
		sessions: newSessions(), throttle: newThrottle(), misdirected: newThrottle(), searches: newSearchLimiter(opts.SearchTimeout)}
	s.pages = parsePages(s)
	s.handler = securityHeaders(hangUpByDefault(s.checkHost(s.routes())))
	return s
}

// Handler serves the API under /api/v1/ and the console everywhere else.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) now() time.Time { return s.opts.Now() }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	s.apiRoutes(mux)
	s.pageRoutes(mux)
	return mux
}

// contentSecurityPolicy allows the console's own files only: no inline
// script or style (so an injected one would not run), no framing
// (clickjacking), forms posting back only to the console.
const contentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// securityHeaders sets the headers every answer carries. Nothing the
// console answers may be cached: it is all live state, some of it
// personal data (addresses).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}
