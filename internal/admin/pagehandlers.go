package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// pageLimit is how many rows a list page shows unless asked otherwise.
const pageLimit = 50

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, v *visit) {
	s.render(w, v, http.StatusOK, "overview", "Overview", "/", s.overview(r.Context()))
}

// accountsPage lists the accounts, degraded ones first.
func (s *Server) accountsPage(w http.ResponseWriter, r *http.Request, v *visit) {
	accounts := accountsOf(s.b.Accounts(r.Context()))
	sort.SliceStable(accounts, func(i, j int) bool { return accounts[i].Degraded && !accounts[j].Degraded })
	s.render(w, v, http.StatusOK, "accounts", "Accounts", "/accounts", accounts)
}

func (s *Server) systemPage(w http.ResponseWriter, _ *http.Request, v *visit) {
	body := struct {
		Reload reloadView
		Vault  vaultView
	}{reloadOf(s.b.Reload()), vaultOf(s.b.Vault())}
	s.render(w, v, http.StatusOK, "system", "System", "/system", body)
}

// listState is how a list page fared: no store, or an error instead of
// its rows.
type listState struct {
	NoStore, Error string
}

// Ready: the page shows its rows.
func (l *listState) Ready() bool { return l.NoStore == "" && l.Error == "" }

// renderList renders a list page (queue, history): its rows from fill
// when there is a store.
func (s *Server) renderList(w http.ResponseWriter, v *visit, name, title string, ls *listState, body any, fill func(Store) error) {
	status := http.StatusOK
	if st := s.b.Store(); st == nil {
		ls.NoStore = noStorePage
	} else if err := fill(st); err != nil {
		status, ls.Error = s.pageError(err)
	}
	s.render(w, v, status, name, title, "/"+name, body)
}

// pagingLinks are the links of a list page to its first page (when it
// is not on it: paged) and to the next one (when there is one: the
// cursor parameter key set to next).
func pagingLinks(path string, links url.Values, paged bool, key, next string) (first, nextPage string) {
	if paged {
		first = path + "?" + links.Encode()
	}
	if next != "" {
		links.Set(key, next)
		nextPage = path + "?" + links.Encode()
	}
	return first, nextPage
}

// queueView is the queue page's content.
type queueView struct {
	listState
	Form        queueForm
	Rows        []queueRow
	First, Next string
}

type queueRow struct {
	QueueEntry
	Pending int
	Actions *actionsView // nil for the read scope
}

// actionsView is the buttons of one queued message (admin scope only).
type actionsView struct {
	ID, State, CSRF, Return, ReturnAfterDelete string
}

func (s *Server) actionsFor(v *visit, e QueueEntry, back string) *actionsView {
	if v.p.scope < scopeAdmin {
		return nil
	}
	afterDelete := back
	if back == "/messages/"+e.ID {
		afterDelete = "/queue"
	}
	return &actionsView{ID: e.ID, State: e.State, CSRF: v.sess.csrf, Return: back, ReturnAfterDelete: afterDelete}
}

func (s *Server) queuePageView(w http.ResponseWriter, r *http.Request, v *visit) {
	body := &queueView{Form: queueFormOf(r.URL.Query())}
	s.renderList(w, v, "queue", "Queue", &body.listState, body, func(st Store) error {
		entries, next, err := s.queuePage(r, st, body.Form, pageLimit)
		for _, e := range entries {
			body.Rows = append(body.Rows, queueRow{QueueEntry: e, Pending: pending(e), Actions: s.actionsFor(v, e, r.URL.RequestURI())})
		}
		body.First, body.Next = pagingLinks("/queue", body.Form.values(), body.Form.After != "", "after", next)
		return err
	})
}

const noStorePage = "This relay has no store block: listeners deliver directly, so there is no queue and no delivery history."

func pending(e QueueEntry) int {
	n := 0
	for _, r := range e.Recipients {
		if r.State == store.RcptPending {
			n++
		}
	}
	return n
}

// pageError is the status and text of a failed list: the operator's
// input (400), a search the console would not run or stopped, or the
// store (503/500).
func (s *Server) pageError(err error) (int, string) {
	var pe *paramError
	switch {
	case errors.Is(err, errStaleCursor):
		return http.StatusBadRequest, "The page cursor names a record that no longer exists; start the search again."
	case errors.As(err, &pe):
		return http.StatusBadRequest, "Check the " + pe.name + " field: " + pe.msg
	case errors.Is(err, errSearchBusy):
		return http.StatusServiceUnavailable, fmt.Sprintf("%d history searches are running already, the most the console runs at once. Try again in a few seconds.", maxSearches)
	case errors.Is(err, errSearchTimeout):
		return http.StatusServiceUnavailable, fmt.Sprintf("The search took longer than %s and was stopped. Narrow it with a time range (Since, Until), or search by queue ID or Message-ID.", s.searches.timeout)
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "The store is unavailable: " + err.Error()
	}
	return http.StatusInternalServerError, "The store failed: " + err.Error()
}

// historyView is the history page's content.
type historyView struct {
	listState
	Form        searchForm
	States      []string
	Rows        []*HistoryEntry
	First, Next string
	// Window is set when the search covered the default window only
	// (since then is its start, until its end or zero for now).
	Window       string
	Since, Until time.Time
}

func (s *Server) historyPage(w http.ResponseWriter, r *http.Request, v *visit) {
	body := &historyView{Form: searchFormOf(r.URL.Query()), States: messageStates}
	s.renderList(w, v, "history", "History", &body.listState, body, func(st Store) error {
		res, err := s.search(r, st, body.Form, pageLimit)
		body.Rows = res.entries
		body.showWindow(res)
		body.First, body.Next = pagingLinks("/history", body.Form.values(), body.Form.Before != "", "before", res.next)
		return err
	})
}

// showWindow puts the default window a search covered into its form, so
// that the operator sees it, and its links to other pages keep it: as
// the time it starts at, never "24h", which a later page would read
// back from a later now, sliding the window past records at its lower
// edge.
func (h *historyView) showWindow(res searchResult) {
	if !res.windowed {
		return
	}
	h.Window, h.Since, h.Until = windowText, res.query.Since, res.query.Until
	h.Form.Since = res.query.Since.UTC().Format(time.RFC3339)
}

// messagePageView is the message page's content: the envelope from the
// queue while it is queued, else from the history.
type messagePageView struct {
	NoStore              string
	State, Account, From string
	MessageID, Subject   string
	Size                 int64
	Listener, Client     string
	Received             time.Time
	Queued               *QueueEntry
	History              *HistoryEntry
	Recipients           []rcptRow
	Events               []EventEntry
	Actions              *actionsView
}

func (s *Server) messagePage(w http.ResponseWriter, r *http.Request, v *visit) {
	id := NormalizeID(r.PathValue("id"))
	title := "Message " + id
	st := s.b.Store()
	if st == nil {
		s.render(w, v, http.StatusOK, "message", title, "/history", messagePageView{NoStore: noStorePage})
		return
	}
	m, err := s.ops(st).Show(r.Context(), id)
	switch {
	case errors.Is(err, ErrNoMessage):
		s.renderError(w, v, http.StatusNotFound, fmt.Sprintf("No message %s in the queue or its history.", id))
		return
	case err != nil:
		status, text := s.pageError(err)
		s.renderError(w, v, status, text)
		return
	}
	s.render(w, v, http.StatusOK, "message", title, "/history", s.messageBody(v, m))
}

func (s *Server) messageBody(v *visit, m *Message) messagePageView {
	mv := s.messageView(m)
	b := messagePageView{Queued: mv.Queue, History: mv.History, Events: mv.Events, Recipients: recipientsOf(mv)}
	switch {
	case mv.Queue != nil:
		q := mv.Queue
		b.State, b.Account, b.From, b.MessageID, b.Size = q.State, q.Account, q.From, q.MessageID, q.Size
		b.Listener, b.Client, b.Received = q.Listener, q.Client, q.Received
		b.Actions = s.actionsFor(v, *q, "/messages/"+q.ID)
	case mv.History != nil:
		h := mv.History
		b.State, b.Account, b.From, b.MessageID, b.Size = h.State, h.Account, h.From, h.MessageID, h.Size
		b.Listener, b.Client, b.Received = h.Listener, h.Client, h.Received
	}
	if mv.History != nil {
		b.Subject = mv.History.Subject
	}
	return b
}

// rcptRow is one recipient on the message page.
type rcptRow struct {
	Addr, State, LastReply string
}

// recipientsOf lists a message's recipients with their state: from the
// queue while it is queued, else each with the last event of its trail
// that names it (attempt, delivered, bounced).
func recipientsOf(mv MessageView) []rcptRow {
	if mv.Queue != nil {
		rows := make([]rcptRow, len(mv.Queue.Recipients))
		for i, r := range mv.Queue.Recipients {
			rows[i] = rcptRow{Addr: r.Addr, State: r.State, LastReply: r.LastReply}
		}
		return rows
	}
	if mv.History == nil {
		return nil
	}
	last := map[string]EventEntry{}
	for _, e := range mv.Events {
		if e.Rcpt != "" {
			last[e.Rcpt] = e
		}
	}
	rows := make([]rcptRow, len(mv.History.Recipients))
	for i, addr := range mv.History.Recipients {
		row := rcptRow{Addr: addr, State: mv.History.State}
		if e, ok := last[addr]; ok {
			row.State, row.LastReply = e.Type, e.Reply
		}
		rows[i] = row
	}
	return rows
}

// queueActPage is a queue action's form post (admin scope): the outcome
// is shown on the page it came from.
func (s *Server) queueActPage(w http.ResponseWriter, r *http.Request, v *visit) {
	a, ok := ParseAction(r.PathValue("action"))
	if !ok {
		s.renderError(w, v, http.StatusNotFound, "There is no such queue action.")
		return
	}
	id := NormalizeID(r.PathValue("id"))
	if !s.permitted(r, v.p, "queue."+string(a), id) {
		s.renderError(w, v, http.StatusForbidden, "You signed in with the read token: it may look, not act. Sign in with the admin token to act.")
		return
	}
	st := s.b.Store()
	if st == nil {
		s.renderError(w, v, http.StatusServiceUnavailable, noStorePage)
		return
	}
	res := s.act(r, v.p, st, a, id)
	s.sessions.setFlash(v.sess, flash{OK: res.Result == Done, Text: fmt.Sprintf("%s %s: %s", capitalized(a), id, res.Detail)})
	http.Redirect(w, r, localPath(r.PostFormValue("return"), "/queue"), http.StatusSeeOther)
}

func capitalized(a Action) string {
	s := string(a)
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// reloadPage is the reload button's form post (admin scope).
func (s *Server) reloadPage(w http.ResponseWriter, r *http.Request, v *visit) {
	if !s.permitted(r, v.p, "reload", "configuration") {
		s.renderError(w, v, http.StatusForbidden, "You signed in with the read token: it may look, not act. Sign in with the admin token to reload.")
		return
	}
	f := flash{OK: true, Text: "Reloaded: the new configuration is in effect."}
	if err := s.reload(r, v.p); err != nil {
		f = flash{Text: "The reload failed; the running configuration stays in effect: " + err.Error()}
	}
	s.sessions.setFlash(v.sess, f)
	http.Redirect(w, r, "/system", http.StatusSeeOther)
}
