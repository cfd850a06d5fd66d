package admin

import "net/http"

// The console holds few connections (README "Operator console"), and an
// idle keep-alive connection stays open for the listener's idle timeout.
// So every answer closes its connection ("Connection: close": the
// http.Server hangs up once it is written; over HTTP/2 the connection is
// shut down gracefully) unless the request proved it comes from an
// operator: a valid bearer token, a live session, the right token
// signing in. A stranger's cheap request (no token, a wrong one, a
// foreign host name, the sign-in page) then costs them a new connection
// each time instead of holding one.

// hangUpByDefault marks every answer "Connection: close" until keepAlive
// lifts it.
func hangUpByDefault(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hangUp(w)
		next.ServeHTTP(w, r)
	})
}

// hangUp closes the connection after this answer.
func hangUp(w http.ResponseWriter) { w.Header().Set("Connection", "close") }

// keepAlive keeps the connection of an operator's request open after
// its answer.
func keepAlive(w http.ResponseWriter) { w.Header().Del("Connection") }

// forOperators keeps the connection open after an answer to a browser
// with a live session (a static file the console's pages load); a
// stranger's connection closes.
func (s *Server) forOperators(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(cookieName(r)); err == nil && s.sessions.get(c.Value, r.TLS != nil, s.now()) != nil {
			keepAlive(w)
		}
		next.ServeHTTP(w, r)
	})
}
