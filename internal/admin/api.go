package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// apiFunc serves an authenticated API request.
type apiFunc func(w http.ResponseWriter, r *http.Request, p principal)

func (s *Server) apiRoutes(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/overview", s.api(s.apiOverview))
	mux.Handle("GET /api/v1/accounts", s.api(s.apiAccounts))
	mux.Handle("GET /api/v1/messages", s.api(s.apiList(searchParams, s.apiSearch)))
	mux.Handle("GET /api/v1/messages/{id}", s.api(s.apiMessage))
	mux.Handle("GET /api/v1/queue", s.api(s.apiList(queueParams, s.apiQueue)))
	mux.Handle("POST /api/v1/queue/{id}/{action}", s.api(s.apiAct))
	mux.Handle("DELETE /api/v1/queue/{id}", s.api(s.apiAct))
	mux.Handle("GET /api/v1/reload", s.api(s.apiReload))
	mux.Handle("POST /api/v1/reload", s.api(s.apiTriggerReload))
	mux.Handle("GET /api/v1/vault", s.api(s.apiVault))
	// Anything else under /api/ is answered in JSON, and only after
	// authentication: the API's shape is not shown to strangers.
	mux.Handle("/api/", s.api(func(w http.ResponseWriter, r *http.Request, _ principal) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
}

// api authenticates a request by its bearer token (RFC 6750), never by a
// cookie: a page of another site can make a browser send cookies, not an
// Authorization header, so cross-site request forgery cannot reach the
// API.
func (s *Server) api(h apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := s.authenticateAPI(w, r); ok {
			keepAlive(w)
			h(w, r, p)
		}
	})
}

func (s *Server) authenticateAPI(w http.ResponseWriter, r *http.Request) (principal, bool) {
	tok, err := bearer(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="oauthrelay"`)
		writeError(w, http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer TOKEN)")
		return principal{}, false
	}
	toks, err := s.opts.Tokens()
	if err != nil {
		s.log.Error("the admin tokens are unavailable", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the admin tokens are unavailable; see the relay's log")
		return principal{}, false
	}
	h := hashToken(tok)
	if sc := scopeOf(h, toks); sc != scopeNone {
		return principal{scope: sc, tokenID: h.id(), via: "api"}, true
	}
	if left, blocked := s.wrongToken(r, h, "authenticate", "api"); blocked {
		lockedOut(w, left)
		writeError(w, http.StatusTooManyRequests, "too many failed authentications from this address; try again later")
		return principal{}, false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="oauthrelay", error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, "the token is not valid")
	return principal{}, false
}

// wrongToken counts a wrong token (hash h) against the request's client
// and logs it. Blocked: the client is locked out for left; the attempt
// is answered 429 and, to keep a flood out of the log, not logged one
// by one: the line of the attempt that blocked it says until when, and
// one more line each time the count reaches a power of ten (floodMark),
// so that ten wrong tokens and ten million do not look the same.
func (s *Server) wrongToken(r *http.Request, h tokenHash, action, via string) (left time.Duration, blocked bool) {
	now := s.now()
	client := clientKey(r)
	n, until := s.throttle.fail(client, now)
	if blocked = n > failLimit; blocked {
		left = until.Sub(now)
		if !floodMark(n) {
			return left, true
		}
	}
	e := auditEvent{action: action, outcome: "failure", detail: "the token is not valid", client: client, count: n}
	switch {
	case n == failLimit:
		e.outcome = "throttled"
		e.detail = fmt.Sprintf("the token is not valid; %d wrong tokens within %s: wrong tokens from this address get 429 until %s (the right token still works)",
			failLimit, Span(failWindow), Stamp(until, time.UTC))
	case blocked:
		e.outcome = "throttled"
		e.detail = fmt.Sprintf("%d wrong tokens from this address within %s, all refused; the next line comes at %d (the right token still works)",
			n, Span(failWindow), n*10)
	}
	s.auditLog(r, principal{tokenID: failedTokenID(h), via: via}, e)
	return left, blocked
}

// floodMark: n is a power of ten, one of the counts of a client's wrong
// tokens that are logged past the lockout.
func floodMark(n int) bool {
	for n >= 10 && n%10 == 0 {
		n /= 10
	}
	return n == 1
}

// retryAfter tells the client to wait seconds (RFC 9110 section 10.2.3).
func retryAfter(w http.ResponseWriter, seconds int) {
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
}

// lockedOut answers the Retry-After of a client locked out for left more
// (rounded up, so that it is not back a moment too soon).
func lockedOut(w http.ResponseWriter, left time.Duration) {
	retryAfter(w, int(left/time.Second)+1)
}

// permitted reports whether p may take an admin action, and logs the
// refusal of one it may not.
func (s *Server) permitted(r *http.Request, p principal, action, target string) bool {
	if p.scope >= scopeAdmin {
		return true
	}
	s.auditLog(r, p, auditEvent{action: action, target: target, outcome: "forbidden", detail: "the " + p.scope.String() + " token may not act"})
	return false
}

func (s *Server) forbidAPI(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="oauthrelay", error="insufficient_scope", scope="admin"`)
	writeError(w, http.StatusForbidden, "this action needs the admin token")
}

func (s *Server) apiOverview(w http.ResponseWriter, r *http.Request, _ principal) {
	writeJSON(w, http.StatusOK, s.overview(r.Context()))
}

func (s *Server) apiAccounts(w http.ResponseWriter, r *http.Request, _ principal) {
	writeJSON(w, http.StatusOK, map[string]any{"accounts": accountsOf(s.b.Accounts(r.Context()))})
}

func (s *Server) apiReload(w http.ResponseWriter, _ *http.Request, _ principal) {
	writeJSON(w, http.StatusOK, reloadOf(s.b.Reload()))
}

func (s *Server) apiVault(w http.ResponseWriter, _ *http.Request, _ principal) {
	writeJSON(w, http.StatusOK, vaultOf(s.b.Vault()))
}

// apiTriggerReload reloads as SIGHUP does. A failed reload is 422: the
// request was fine, the configuration it read was not (the running one
// stays in effect).
func (s *Server) apiTriggerReload(w http.ResponseWriter, r *http.Request, p principal) {
	if !s.permitted(r, p, "reload", "configuration") {
		s.forbidAPI(w)
		return
	}
	err := s.reload(r, p)
	v := map[string]any{"result": "success", "reload": reloadOf(s.b.Reload())}
	if err != nil {
		v["result"], v["error"] = "failure", "reload failed: "+err.Error()
		writeJSON(w, http.StatusUnprocessableEntity, v)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// apiList answers GET /api/v1/messages and /api/v1/queue: list answers
// a page of messages and, when the page is full, where the next one
// starts.
func (s *Server) apiList(known []string, list func(*http.Request, Store, url.Values) (map[string]any, error)) apiFunc {
	return func(w http.ResponseWriter, r *http.Request, _ principal) {
		st := s.storeOrFail(w)
		if st == nil {
			return
		}
		q := r.URL.Query()
		if err := unknownParam(q, known); err != nil {
			writeParamError(w, err)
			return
		}
		v, err := list(r, st, q)
		if err != nil {
			s.writeStoreError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// apiSearch answers a history search with the time range it covered:
// since and until as applied (RFC 3339), and a note when since is the
// default window's, so that nobody takes "nothing found" for "never
// sent".
func (s *Server) apiSearch(r *http.Request, st Store, q url.Values) (map[string]any, error) {
	res, err := s.search(r, st, searchFormOf(q), defaultLimit)
	if err != nil {
		return nil, err
	}
	v := map[string]any{"messages": res.entries}
	if res.next != "" {
		v["next_before"] = res.next
	}
	if !res.query.Since.IsZero() {
		v["since"] = res.query.Since.UTC()
	}
	if !res.query.Until.IsZero() {
		v["until"] = res.query.Until.UTC()
	}
	if res.windowed {
		v["since_default"] = true
		v["note"] = "a search by from, rcpt, subject, state or account without since, id or message_id covers the last " + windowText +
			" (before until, when given); since=all searches the whole history"
	}
	return v, nil
}

func (s *Server) apiQueue(r *http.Request, st Store, q url.Values) (map[string]any, error) {
	entries, next, err := s.queuePage(r, st, queueFormOf(q), defaultLimit)
	if err != nil {
		return nil, err
	}
	v := map[string]any{"messages": entries}
	if next != "" {
		v["next_after"] = next
	}
	return v, nil
}

// searchResult is one page of a history search.
type searchResult struct {
	entries []*HistoryEntry
	next    string // the ID to page back from, when the page is full
	// query is the search as run: its Since and Until as applied.
	query    store.HistoryQuery
	windowed bool // Since is the default window's
}

// errStaleCursor: the page cursor (before) names a record the store no
// longer has (pruned, or never there).
var errStaleCursor = &paramError{"before", "the page cursor names a record that no longer exists; start the search again"}

// search runs a history search within the console's search limits
// (searchlimit.go). Errors are a *paramError, errSearchBusy,
// errSearchTimeout or the store's; res.query is set unless the search
// itself was wrong.
func (s *Server) search(r *http.Request, st Store, f searchForm, def int) (res searchResult, err error) {
	subjects := s.b.Info().HistorySubjects
	if res.query, res.windowed, err = f.query(s.now(), subjects, def); err != nil {
		return searchResult{}, err
	}
	var recs []*store.Record
	err = s.searches.run(r.Context(), func(ctx context.Context) (err error) {
		recs, err = st.Search(ctx, res.query)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound) && res.query.Before != "":
		return res, errStaleCursor
	case errors.Is(err, errSearchTimeout):
		s.log.Warn("history search stopped at its deadline", "timeout", s.searches.timeout, "fields", strings.Join(slices.Sorted(maps.Keys(f.values())), ","))
		return res, err
	case err != nil:
		return res, err
	}
	res.entries = make([]*HistoryEntry, len(recs))
	for i, rec := range recs {
		res.entries[i] = HistoryOf(rec)
		if !subjects {
			res.entries[i].Subject = ""
		}
	}
	if len(recs) == res.query.Limit {
		res.next = recs[len(recs)-1].ID
	}
	return res, nil
}

func (s *Server) apiMessage(w http.ResponseWriter, r *http.Request, _ principal) {
	st := s.storeOrFail(w)
	if st == nil {
		return
	}
	m, err := s.ops(st).Show(r.Context(), NormalizeID(r.PathValue("id")))
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.messageView(m))
}

// messageView is m's JSON, its subject left out unless the store keeps
// subjects.
func (s *Server) messageView(m *Message) MessageView {
	v := m.View()
	if v.History != nil && !s.b.Info().HistorySubjects {
		v.History.Subject = ""
	}
	return v
}

// queuePage lists one page of the queue; next is the ID to continue
// after when the page is full.
func (s *Server) queuePage(r *http.Request, st Store, f queueForm, def int) (entries []QueueEntry, next string, err error) {
	flt, err := f.filter(def)
	if err != nil {
		return nil, "", err
	}
	list, err := s.ops(st).Store.List(r.Context(), flt)
	if err != nil {
		return nil, "", err
	}
	entries = make([]QueueEntry, len(list))
	for i, e := range list {
		entries[i] = EntryOf(e)
	}
	if len(list) == flt.Limit {
		next = list[len(list)-1].ID
	}
	return entries, next, nil
}

// apiAct is POST /api/v1/queue/{id}/retry|hold|release and DELETE
// /api/v1/queue/{id}; the answer is that of `oauthrelay queue ACTION
// -json`, with an error when the action was not done.
func (s *Server) apiAct(w http.ResponseWriter, r *http.Request, p principal) {
	name := r.PathValue("action")
	if r.Method == http.MethodDelete {
		name = string(ActDelete)
	}
	a, ok := ParseAction(name)
	if !ok || (a == ActDelete && r.Method != http.MethodDelete) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such action %q: POST retry, hold or release; DELETE the message", name))
		return
	}
	id := NormalizeID(r.PathValue("id"))
	if !s.permitted(r, p, "queue."+string(a), id) {
		s.forbidAPI(w)
		return
	}
	st := s.storeOrFail(w)
	if st == nil {
		return
	}
	res := s.act(r, p, st, a, id)
	v := map[string]any{"action": a, "results": []Result{res}}
	status := actStatus(res)
	if status != http.StatusOK {
		v["error"] = res.ID + ": " + res.Detail
	}
	writeJSON(w, status, v)
}

// actStatus maps an action's result to the API's status: 404 for a
// message nobody knows, 409 for one the action does not apply to (not
// queued any more, not held, held for a retry), 503/500 for the store.
func actStatus(res Result) int {
	switch {
	case res.Result == Done:
		return http.StatusOK
	case errors.Is(res.Cause, ErrNoMessage):
		return http.StatusNotFound
	case errors.Is(res.Cause, ErrNotQueued), errors.Is(res.Cause, ErrNotApplicable):
		return http.StatusConflict
	case errors.Is(res.Cause, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// storeOrFail returns the store, or answers 503 without one.
func (s *Server) storeOrFail(w http.ResponseWriter) Store {
	st := s.b.Store()
	if st == nil {
		writeError(w, http.StatusServiceUnavailable, errNoStore)
	}
	return st
}

const errNoStore = "this relay has no store block, so it keeps no queue and no history"

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // Message-IDs are <...>: keep them readable (as `queue -json` does)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeParamError(w http.ResponseWriter, err error) {
	var pe *paramError
	if errors.As(err, &pe) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": pe.Error(), "parameter": pe.name})
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

// writeStoreError answers a parameter error, an unknown message, a
// search the console would not run or stopped, or the store's failure.
func (s *Server) writeStoreError(w http.ResponseWriter, err error) {
	var pe *paramError
	switch {
	case errors.As(err, &pe):
		writeParamError(w, err)
	case errors.Is(err, ErrNoMessage):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, errSearchBusy):
		retryAfter(w, int(searchRetryAfter/time.Second))
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d history searches are running already, the most the console runs at once; try again in a few seconds", maxSearches))
	case errors.Is(err, errSearchTimeout):
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("the search took longer than %s and was stopped; narrow it with a time range (since, until), or search by queue ID (id) or Message-ID (message_id)", s.searches.timeout))
	case errors.Is(err, context.Canceled):
		s.log.Debug("a console request ended with its client", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the request was cancelled")
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("store unavailable", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the store is unavailable: "+err.Error())
	default:
		s.log.Error("store error", "error", err)
		writeError(w, http.StatusInternalServerError, "store error: "+err.Error())
	}
}
