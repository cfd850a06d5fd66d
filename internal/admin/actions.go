package admin

import (
	"context"
	"net/http"
	"time"
)

// The admin actions, as the API and the pages take them: each is done
// through Ops or the Backend and leaves one audit line.

// ops are the queue operations on st, in UTC, each queued message's
// expiry under the configured max_lifetime (as `oauthrelay queue` shows
// it).
func (s *Server) ops(st Store) Ops {
	var qs QueueStore = st
	if d := s.b.Info().QueueMaxLifetime; d > 0 {
		qs = LifetimeView{QueueStore: st, MaxLifetime: d}
	}
	return Ops{Store: qs, Now: s.now, Loc: time.UTC}
}

// act applies a to the message id for p, who may act.
func (s *Server) act(r *http.Request, p principal, st Store, a Action, id string) Result {
	res, err := s.ops(st).Act(r.Context(), a, []string{id}, false)
	if err != nil || len(res) != 1 { // only -all lists the queue, and fails so
		res = []Result{{ID: id, Result: Failed, Detail: "the store could not act", Cause: err}}
	}
	s.auditLog(r, p, auditEvent{action: "queue." + string(a), target: id, outcome: res[0].Result, detail: res[0].Detail})
	return res[0]
}

// reload reads the configuration again for p, who may act. The reload
// runs to its end even when the client goes away (a closed tab, an
// interrupted curl): it keeps the request's values, not its
// cancellation, so that whether the new configuration is applied never
// depends on the operator's connection.
func (s *Server) reload(r *http.Request, p principal) error {
	err := s.b.TriggerReload(context.WithoutCancel(r.Context()))
	e := auditEvent{action: "reload", target: "configuration", outcome: "success"}
	if err != nil {
		e.outcome, e.detail = "failure", err.Error()
	}
	s.auditLog(r, p, e)
	return err
}
