package admin

import "net/http"

// auditEvent is one line of the audit log (README "Operator console"):
// every admin action, sign-in and sign-out, whatever its outcome. It
// names the token by its identifier (tokenHash.id), never by its value.
type auditEvent struct {
	action  string // queue.retry, queue.hold, queue.release, queue.delete, reload, login, logout
	target  string // the message ID; "configuration" for a reload; "" for login and logout
	outcome string // done, unchanged, failed, forbidden, refused, success, failure, throttled
	detail  string // why, in words (no secret: details come from Ops, the store or the reload)
	// client and count: for a wrong token, the client's key (clientKey)
	// and its wrong tokens in the throttle's window so far.
	client string
	count  int
}

// failing outcomes are logged at WARN, the others at INFO.
var failing = map[string]bool{"failed": true, "forbidden": true, "refused": true, "failure": true, "throttled": true}

func (s *Server) auditLog(r *http.Request, p principal, e auditEvent) {
	args := []any{"action", e.action, "target", e.target, "outcome", e.outcome, "scope", p.scope.String(),
		"remote", r.RemoteAddr, "token", p.tokenID, "via", p.via}
	if e.client != "" {
		args = append(args, "client", e.client, "count", e.count)
	}
	if e.detail != "" {
		args = append(args, "detail", e.detail)
	}
	if failing[e.outcome] {
		s.audit.Warn("admin action", args...)
		return
	}
	s.audit.Info("admin action", args...)
}
