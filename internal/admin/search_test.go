package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// historyIDs are the IDs of a history answer, in its order.
func historyIDs(t *testing.T, v map[string]any) []string {
	t.Helper()
	list, ok := v["messages"].([]any)
	if !ok {
		t.Fatalf("no messages in %v", v)
	}
	ids := []string{}
	for _, m := range list {
		ids = append(ids, m.(map[string]any)["id"].(string))
	}
	return ids
}

// A search with a filter (part of an address or subject, a state, an
// account) without since covers the last 24 hours (before until, when
// given), and the answer says so; an explicit since, since=all, a queue
// ID or a Message-ID lift the window, and a search without any filter
// (the newest records, up to the page size) has none.
func TestSearchDefaultWindow(t *testing.T) {
	h := newHarness(t, harnessOptions{subjects: true})
	now := h.clock.Now()
	stamp := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	tests := []struct {
		query       string
		since       time.Duration // the store's Since, back from now; 0: none
		answerSince string        // the answer's since; "" for none
		defaulted   bool          // the answer notes the default window
		ids         []string
	}{
		{"from=crm", 24 * time.Hour, stamp(24 * time.Hour), true, []string{}},
		{"from=EXAMPLE", 24 * time.Hour, stamp(24 * time.Hour), true, []string{idHeld, idQueued}},
		{"subject=order", 24 * time.Hour, stamp(24 * time.Hour), true, []string{}},
		{"rcpt=customer&since=all", 0, "", false, []string{idDelivered}},
		{"from=crm&since=2d", 48 * time.Hour, stamp(48 * time.Hour), false, []string{idDelivered}},
		{"from=crm&since=2026-03-13", 33*time.Hour + 26*time.Minute + 53*time.Second, "2026-03-13T00:00:00Z", false, []string{idDelivered}},
		{"from=crm&id=" + idDelivered, 0, "", false, []string{idDelivered}},
		{"rcpt=customer&message_id=%3Ccrm-7@crm.example%3E", 0, "", false, []string{idDelivered}},
		{"rcpt=gone&until=2d12h", 84 * time.Hour, stamp(84 * time.Hour), true, []string{idDeleted}},
		// A state or an account, rare among the records, can walk the
		// whole history too.
		{"state=sent", 24 * time.Hour, stamp(24 * time.Hour), true, []string{}},
		{"account=alice@example.com", 24 * time.Hour, stamp(24 * time.Hour), true, []string{idQueued}},
		{"state=sent&since=all", 0, "", false, []string{idDelivered}},
		{"account=ALICE@example.com&since=3d", 72 * time.Hour, stamp(72 * time.Hour), false, []string{idQueued, idDelivered}},
		{"state=deleted&until=2d12h", 84 * time.Hour, stamp(84 * time.Hour), true, []string{idDeleted}},
		{"state=sent&id=" + idDelivered, 0, "", false, []string{idDelivered}},
		// No filter at all: the newest first, up to the page size.
		{"", 0, "", false, []string{idHeld, idQueued, idDelivered, idDeleted}},
		{"until=2d12h", 0, "", false, []string{idDeleted}},
		{"limit=1", 0, "", false, []string{idHeld}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			resp, v := h.api("GET", "/api/v1/messages?"+tc.query, readToken)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %v", resp.StatusCode, v)
			}
			q := h.b.st.lastQuery()
			if (tc.since == 0 && !q.Since.IsZero()) || (tc.since != 0 && !q.Since.Equal(now.Add(-tc.since))) {
				t.Errorf("store since %v, want %v back", q.Since, tc.since)
			}
			if got, _ := v["since"].(string); got != tc.answerSince {
				t.Errorf("answer since %q, want %q", got, tc.answerSince)
			}
			note, _ := v["note"].(string)
			if tc.defaulted != strings.Contains(note, "last 24h") || tc.defaulted != strings.Contains(note, "since=all") {
				t.Errorf("note %q (default window: %v)", note, tc.defaulted)
			}
			if ids := historyIDs(t, v); !slices.Equal(ids, tc.ids) {
				t.Errorf("found %v, want %v", ids, tc.ids)
			}
		})
	}
	if _, v := h.api("GET", "/api/v1/messages?rcpt=gone&until=2d12h", readToken); v["until"] != stamp(60*time.Hour) {
		t.Errorf("answer until %v", v["until"])
	}
}

// The history page shows the window it applied in the form, as the time
// it starts at, and says why.
func TestSearchDefaultWindowPage(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(readToken)
	tests := []struct {
		path      string
		sinceWant string // the Since field's value
		notice    bool
		found     string // an ID the page lists; "" for none
	}{
		{"/history?from=crm", `value="2026-03-13T09:26:53Z"`, true, ""},
		{"/history?rcpt=gone&until=2d12h", `value="2026-03-10T21:26:53Z"`, true, idDeleted},
		{"/history?state=sent", `value="2026-03-13T09:26:53Z"`, true, ""},
		{"/history?from=crm&since=all", `value="all"`, false, idDelivered},
		{"/history", `value=""`, false, idDelivered},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := b.get(tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !strings.Contains(body, `name="since" type="text" `+tc.sinceWant) {
				t.Errorf("the Since field lacks %s", tc.sinceWant)
			}
			notice := strings.Contains(body, "Searched only the 24h back from") && strings.Contains(body, "<code>all</code>")
			if notice != tc.notice {
				t.Errorf("window notice shown: %v, want %v", notice, tc.notice)
			}
			if tc.found == "" && strings.Contains(body, idDelivered) {
				t.Error("lists a message older than the window")
			}
			if tc.found != "" && !strings.Contains(body, tc.found) {
				t.Errorf("lacks %s", tc.found)
			}
		})
	}
}

// apiStatus calls the API from any goroutine (the harness's helpers fail
// the test, which only the test's goroutine may do).
func (h *harness) apiStatus(ctx context.Context, path, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := h.noRedirects().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// awaitHeld returns the context of the next search the store holds.
func awaitHeld(t *testing.T, held <-chan context.Context) context.Context {
	t.Helper()
	select {
	case ctx := <-held:
		return ctx
	case <-time.After(10 * time.Second):
		t.Fatal("no search reached the store")
		return nil
	}
}

// At most two searches run at once; a third waits a moment for a slot,
// then gets 503 with Retry-After (the page says so too), and the store
// is not asked.
func TestSearchConcurrencyLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	held, release := h.b.st.holdSearches()
	t.Cleanup(release)
	statuses := make(chan int, maxSearches)
	for range maxSearches {
		go func() {
			status, err := h.apiStatus(context.Background(), "/api/v1/messages?from=crm&since=all", readToken)
			if err != nil {
				t.Error(err)
			}
			statuses <- status
		}()
	}
	for range maxSearches {
		awaitHeld(t, held)
	}
	began := time.Now()
	resp, v := h.api("GET", "/api/v1/messages?from=x", readToken)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(v["error"].(string), "history searches are running") {
		t.Errorf("third search: %d, Retry-After %q, %v", resp.StatusCode, resp.Header.Get("Retry-After"), v)
	}
	if waited := time.Since(began); waited > 5*time.Second {
		t.Errorf("the third search waited %s", waited)
	}
	b := h.browser()
	b.login(readToken)
	if resp, body := b.get("/history?from=x"); resp.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(body, "2 history searches are running already") {
		t.Errorf("third search on the page: %d\n%s", resp.StatusCode, body)
	}
	if len(held) != 0 {
		t.Error("a refused search reached the store")
	}
	release()
	for range maxSearches {
		if status := <-statuses; status != http.StatusOK {
			t.Errorf("a held search ended with %d", status)
		}
	}
	if resp, v := h.api("GET", "/api/v1/messages?from=x", readToken); resp.StatusCode != http.StatusOK {
		t.Errorf("after the others ended: %d %v", resp.StatusCode, v)
	}
}

// A search runs under a deadline; past it the store's work is cancelled
// and the operator is told to narrow the search with a time range.
func TestSearchDeadline(t *testing.T) {
	const timeout = 50 * time.Millisecond
	h := newHarness(t, harnessOptions{searchTimeout: timeout})
	held, release := h.b.st.holdSearches()
	t.Cleanup(release)
	for i := range maxSearches + 1 { // more than the slots: each one frees its own
		began := time.Now()
		resp, v := h.api("GET", "/api/v1/messages?from=crm&since=all", readToken)
		ctx := awaitHeld(t, held)
		if deadline, ok := ctx.Deadline(); !ok || deadline.Sub(began) > timeout+time.Second {
			t.Errorf("search %d: the store's context has deadline %v (%v)", i, deadline, ok)
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("search %d: the store's context ended with %v", i, ctx.Err())
		}
		msg, _ := v["error"].(string)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg, "narrow it with a time range (since, until)") {
			t.Errorf("search %d: %d %v", i, resp.StatusCode, v)
		}
	}
	b := h.browser()
	b.login(readToken)
	resp, body := b.get("/history?from=crm&since=all")
	awaitHeld(t, held)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "Narrow it with a time range (Since, Until)") ||
		!strings.Contains(body, `value="crm"`) {
		t.Errorf("page: %d\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(h.logs.String(), "history search stopped at its deadline") {
		t.Error("no log line for the stopped search")
	}
}

// The store's work ends when the client goes away, under the default
// 10 s deadline, and the slot is free again.
func TestSearchEndsWithItsClient(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	held, release := h.b.st.holdSearches()
	t.Cleanup(release)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := h.apiStatus(ctx, "/api/v1/messages?rcpt=x", readToken)
		done <- err
	}()
	storeCtx := awaitHeld(t, held)
	if deadline, ok := storeCtx.Deadline(); !ok || deadline.Sub(began) > DefaultSearchTimeout+time.Second || deadline.Sub(began) < DefaultSearchTimeout-time.Second {
		t.Errorf("deadline %v after the request (%v), want %s", deadline.Sub(began), ok, DefaultSearchTimeout)
	}
	cancel()
	select {
	case <-storeCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the store's search outlived its client")
	}
	if !errors.Is(storeCtx.Err(), context.Canceled) {
		t.Errorf("the store's context ended with %v", storeCtx.Err())
	}
	if err := <-done; err == nil {
		t.Error("the cancelled request succeeded")
	}
	for range maxSearches { // both slots are free: both reach the store
		go func() { _, _ = h.apiStatus(context.Background(), "/api/v1/messages?rcpt=y", readToken) }()
	}
	for range maxSearches {
		awaitHeld(t, held)
	}
	release()
}

// A page cursor (before) naming a record that is gone (pruned) is the
// operator's to fix: 400 saying to start again, not a store failure.
func TestSearchStaleCursor(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const gone = "01JPRUNED00000000000000000"
	resp, v := h.api("GET", "/api/v1/messages?before="+gone, readToken)
	if resp.StatusCode != http.StatusBadRequest || v["parameter"] != "before" ||
		!strings.Contains(v["error"].(string), "the page cursor names a record that no longer exists; start the search again") {
		t.Errorf("API: %d %v", resp.StatusCode, v)
	}
	b := h.browser()
	b.login(readToken)
	resp, body := b.get("/history?from=example&since=all&before=" + gone)
	if resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "The page cursor names a record that no longer exists; start the search again.") ||
		!strings.Contains(body, `href="/history?from=example&amp;since=all">Start the search again`) {
		t.Errorf("page: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(h.logs.String(), "store error") {
		t.Error("a stale cursor is logged as a store error")
	}
}

// The paging links of a search in the default window keep the window's
// start as a time, not "24h": a later page covers the same range as the
// first, however long the operator takes to click, so no record slides
// out at its lower edge.
func TestSearchDefaultWindowPaging(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(readToken)
	const start = "2026-03-13T09:26:53Z"
	_, body := b.get("/history?from=example&limit=1")
	older := `href="/history?before=` + idHeld + `&amp;from=example&amp;limit=1&amp;since=2026-03-13T09%3A26%3A53Z"`
	if !strings.Contains(body, older) || !strings.Contains(body, `value="`+start+`"`) {
		t.Fatalf("first page lacks %s, or the Since field the window's start:\n%s", older, body)
	}
	h.clock.Advance(90 * time.Minute)
	_, body = b.get("/history?before=" + idHeld + "&from=example&limit=1&since=2026-03-13T09%3A26%3A53Z")
	if q := h.b.st.lastQuery(); q.Since.Format(time.RFC3339) != start {
		t.Errorf("the second page searched since %v, want %s", q.Since, start)
	}
	newest := `href="/history?from=example&amp;limit=1&amp;since=2026-03-13T09%3A26%3A53Z">Newest`
	if !strings.Contains(body, idQueued) || !strings.Contains(body, newest) {
		t.Errorf("second page lacks %s or %s:\n%s", idQueued, newest, body)
	}
}
