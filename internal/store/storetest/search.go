package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// The history search (store.Store.Search): every filter alone and
// combined, the order, paging, the limit, and substrings that are only
// substrings.
var searchTests = []test{
	{"Filters", testSearchFilters},
	{"NewestFirst", testSearchOrder},
	{"Paging", testSearchPaging},
	{"PagingFiltered", testSearchPagingFiltered},
	{"BeforeUnknown", testSearchBeforeUnknown},
	{"Limit", testSearchLimit},
	{"Subject", testSearchSubject},
	{"FinalState", testSearchFinalState},
	{"Deadline", testSearchDeadline},
}

func (e *env) search(q store.HistoryQuery) []*store.Record {
	e.t.Helper()
	recs, err := e.s.Search(e.ctx, q)
	if err != nil {
		e.t.Fatalf("Search(%+v): %v", q, err)
	}
	return recs
}

func (e *env) searchIDs(q store.HistoryQuery) []string {
	e.t.Helper()
	out := []string{}
	for _, r := range e.search(q) {
		out = append(out, r.ID)
	}
	return out
}

// searchFixture stores direct-mode records (Record) and queued messages
// (Enqueue), one a minute from 50 minutes ago, oldest first:
//
//	d1  <Scanner@Example.com>     <a@example.net>, <b@example.org>  sent     "Invoice 2024_05"
//	d2  <printer@office.example>  <c@example.net>                   refused  "Überweisung Nr. 5"
//	d3  <a_b@example.com>         <"x y"@example.net>               sent     "100% done"
//	d4  <axb@example.com>         <net@example.com>                 sent     "100x done"
//	d5  <a%b@example.com>         <d@example.net>                   sent     `path C:\tmp`
//	q1  <sender@example.com>      <rcpt@example.net>                queued   "queued one"
//	q2  <sender@example.com>      <rcpt@example.net>                held     ""
func (e *env) searchFixture() {
	e.t.Helper()
	rec := func(id string, minutes int, from, state, subject string, rcpts ...string) *store.Record {
		r := e.directRecord(id, state, e.at(time.Duration(minutes)*time.Minute+time.Second))
		r.From, r.Rcpts, r.Subject = from, rcpts, subject
		return r
	}
	d1 := rec("d1", -50, "<Scanner@Example.com>", store.StateSent, "Invoice 2024_05", "<a@example.net>", "<b@example.org>")
	d1.Account = "Scanner@Example.com"
	d2 := rec("d2", -40, "<printer@office.example>", store.StateRefused, "Überweisung Nr. 5", "<c@example.net>")
	d2.HeaderID = "d2-no-brackets@app1" // a malformed Message-ID is stored as it came
	e.record([]*store.Record{
		d1, d2,
		rec("d3", -30, "<a_b@example.com>", store.StateSent, "100% done", `<"x y"@example.net>`),
		rec("d4", -20, "<axb@example.com>", store.StateSent, "100x done", "<net@example.com>"),
		rec("d5", -15, "<a%b@example.com>", store.StateSent, `path C:\tmp`, "<d@example.net>"),
	})
	q1 := e.msg("q1", withReceived(e.at(-10*time.Minute)))
	q1.Subject = "queued one"
	e.enqueue(q1)
	e.enqueue(e.msg("q2", withReceived(e.at(-5*time.Minute)), withState(store.StateHeld)))
}

func testSearchFilters(t *testing.T, e *env) {
	e.searchFixture()
	at := func(minutes int) time.Time { return e.at(time.Duration(minutes) * time.Minute) }
	cases := []struct {
		name string
		q    store.HistoryQuery
		want []string
	}{
		{"everything", store.HistoryQuery{}, []string{"q2", "q1", "d5", "d4", "d3", "d2", "d1"}},

		{"from, substring", store.HistoryQuery{From: "scanner"}, []string{"d1"}},
		{"from, other case", store.HistoryQuery{From: "SCANNER@EXAMPLE.COM"}, []string{"d1"}},
		{"from, domain", store.HistoryQuery{From: "@example.com"}, []string{"q2", "q1", "d5", "d4", "d3", "d1"}},
		{"from, '_' is no wildcard", store.HistoryQuery{From: "a_b"}, []string{"d3"}},
		{"from, '%' is no wildcard", store.HistoryQuery{From: "a%b"}, []string{"d5"}},
		{"from, no match", store.HistoryQuery{From: "nobody"}, []string{}},

		{"rcpt, the second one", store.HistoryQuery{Rcpt: "b@example.org"}, []string{"d1"}},
		{"rcpt, other case", store.HistoryQuery{Rcpt: "NET@"}, []string{"d4"}},
		{"rcpt, quoted local part", store.HistoryQuery{Rcpt: `"x y"`}, []string{"d3"}},
		{"rcpt, spanning two (JSON)", store.HistoryQuery{Rcpt: `net>","<b`}, []string{}},
		{"rcpt, spanning two (comma)", store.HistoryQuery{Rcpt: "net>,<b"}, []string{}},
		{"rcpt, spanning two (space)", store.HistoryQuery{Rcpt: "net> <b"}, []string{}},
		{"rcpt, spanning two (joined)", store.HistoryQuery{Rcpt: "net><b"}, []string{}},
		{"rcpt, the list's punctuation", store.HistoryQuery{Rcpt: `["`}, []string{}},

		{"Message-ID with brackets", store.HistoryQuery{HeaderID: "<d1@app1>"}, []string{"d1"}},
		{"Message-ID without brackets", store.HistoryQuery{HeaderID: "d1@app1"}, []string{"d1"}},
		{"Message-ID with spaces", store.HistoryQuery{HeaderID: " <q1@client.example> "}, []string{"q1"}},
		{"malformed Message-ID as stored", store.HistoryQuery{HeaderID: "d2-no-brackets@app1"}, []string{"d2"}},
		{"malformed Message-ID with brackets", store.HistoryQuery{HeaderID: "<d2-no-brackets@app1>"}, []string{"d2"}},
		{"Message-ID is exact", store.HistoryQuery{HeaderID: "d1@app"}, []string{}},

		{"ID", store.HistoryQuery{ID: "d3"}, []string{"d3"}},
		{"ID is exact", store.HistoryQuery{ID: "d"}, []string{}},

		{"subject, substring", store.HistoryQuery{Subject: "invoice"}, []string{"d1"}},
		{"subject, '_' is no wildcard", store.HistoryQuery{Subject: "2024_05"}, []string{"d1"}},
		{"subject, '%' is no wildcard", store.HistoryQuery{Subject: "100%"}, []string{"d3"}},
		{"subject, both", store.HistoryQuery{Subject: "100"}, []string{"d4", "d3"}},
		{"subject, the escape character", store.HistoryQuery{Subject: `\`}, []string{"d5"}},
		{"subject, with the escape character", store.HistoryQuery{Subject: `C:\tmp`}, []string{"d5"}},
		{"subject, non-ASCII, same case", store.HistoryQuery{Subject: "Über"}, []string{"d2"}},
		{"subject, non-ASCII, other case", store.HistoryQuery{Subject: "üBERWEISUNG"}, []string{"d2"}},
		{"subject, queued", store.HistoryQuery{Subject: "QUEUED"}, []string{"q1"}},

		{"state", store.HistoryQuery{State: store.StateSent}, []string{"d5", "d4", "d3", "d1"}},
		{"state held", store.HistoryQuery{State: store.StateHeld}, []string{"q2"}},
		{"state refused", store.HistoryQuery{State: store.StateRefused}, []string{"d2"}},

		{"account, other case", store.HistoryQuery{Account: "scanner@example.com"}, []string{"d1"}},
		{"account is exact", store.HistoryQuery{Account: "scanner@example"}, []string{}},

		{"since, inclusive", store.HistoryQuery{Since: at(-30)}, []string{"q2", "q1", "d5", "d4", "d3"}},
		{"until, exclusive", store.HistoryQuery{Until: at(-30)}, []string{"d2", "d1"}},
		{"since and until", store.HistoryQuery{Since: at(-45), Until: at(-12)}, []string{"d5", "d4", "d3", "d2"}},
		{"until before since", store.HistoryQuery{Since: at(-12), Until: at(-45)}, []string{}},

		{"from and state", store.HistoryQuery{From: "example.com", State: store.StateSent}, []string{"d5", "d4", "d3", "d1"}},
		{"from, rcpt and time", store.HistoryQuery{From: "example.com", Rcpt: "example.net", Since: at(-35)},
			[]string{"q2", "q1", "d5", "d3"}},
		{"account, state and time", store.HistoryQuery{Account: "SENDER@example.com", State: store.StateQueued, Until: at(-7)},
			[]string{"q1"}},
		{"ID and a filter it fails", store.HistoryQuery{ID: "d1", State: store.StateRefused}, []string{}},
		{"every filter", store.HistoryQuery{From: "scan", Rcpt: "b@", HeaderID: "d1@app1", ID: "d1", Subject: "2024",
			State: store.StateSent, Account: "scanner@example.com", Since: at(-51), Until: at(-49)}, []string{"d1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, e.searchIDs(tc.q)); diff != "" {
				t.Errorf("Search(%+v) (-want +got):\n%s", tc.q, diff)
			}
		})
	}
	// A record comes back whole, as History returns it.
	for _, id := range []string{"d1", "q1"} {
		want, _ := e.history(id)
		got := e.search(store.HistoryQuery{ID: id})
		if diff := cmp.Diff([]*store.Record{want}, got); diff != "" {
			t.Errorf("Search record of %s differs from History's (-history +search):\n%s", id, diff)
		}
	}
}

// Newest first: by Received, then by ID, descending, whatever the order
// of writing.
func testSearchOrder(t *testing.T, e *env) {
	same := e.at(-time.Hour)
	var recs []*store.Record
	for _, r := range []struct {
		id string
		at time.Time
	}{{"b", same}, {"c", same}, {"a", same}, {"z", same.Add(-time.Millisecond)}, {"y", same.Add(time.Millisecond)}} {
		rec := e.directRecord(r.id, store.StateSent, r.at.Add(time.Second))
		rec.Received = r.at
		recs = append(recs, rec)
	}
	e.record(recs)
	if diff := cmp.Diff([]string{"y", "c", "b", "a", "z"}, e.searchIDs(store.HistoryQuery{})); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// pagedIDs reads every page of q, limit records each, and fails on a
// page larger than the limit.
func (e *env) pagedIDs(q store.HistoryQuery, limit int) []string {
	e.t.Helper()
	q.Limit = limit
	out := []string{}
	for range 1000 {
		page := e.searchIDs(q)
		if len(page) > limit {
			e.t.Fatalf("a page of %d records, limit %d", len(page), limit)
		}
		out = append(out, page...)
		if len(page) < limit {
			return out
		}
		q.Before = page[len(page)-1]
	}
	e.t.Fatal("paging did not end")
	return nil
}

// manyRecords records n direct-mode records, three a millisecond (ties
// in Received are broken by ID), written in an order of their own; every
// third is refused.
func (e *env) manyRecords(n int) {
	e.t.Helper()
	var recs []*store.Record
	for i := range n {
		j := (i * 7919) % n // a permutation: written out of order
		state := store.StateSent
		if j%3 == 0 {
			state = store.StateRefused
		}
		rec := e.directRecord(fmt.Sprintf("r%04d", j), state, e.base)
		rec.Received = e.at(time.Duration(j/3-n) * time.Millisecond)
		recs = append(recs, rec)
	}
	e.record(recs)
}

// Paging with Before goes through a result larger than the limit with no
// record twice and none left out, in the order of a single search.
func testSearchPaging(t *testing.T, e *env) {
	const n = 250
	e.manyRecords(n)
	all := e.searchIDs(store.HistoryQuery{Limit: store.MaxSearchLimit})
	if len(all) != n {
		t.Fatalf("one search found %d records, want %d", len(all), n)
	}
	if !slices.IsSortedFunc(all, func(a, b string) int { return -cmpStrings(a, b) }) {
		t.Errorf("records not newest first: %v", all)
	}
	for _, limit := range []int{1, 7, 40, n - 1, n, n + 1} {
		if diff := cmp.Diff(all, e.pagedIDs(store.HistoryQuery{}, limit)); diff != "" {
			t.Errorf("pages of %d (-single search +pages):\n%s", limit, diff)
		}
	}
}

// cmpStrings orders the IDs of manyRecords as their Received does.
func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Paging a filtered search: the pages hold only matches, and all of them.
func testSearchPagingFiltered(t *testing.T, e *env) {
	const n = 300
	e.manyRecords(n)
	since := e.at(-time.Duration(n)*time.Millisecond + 30*time.Millisecond)
	q := store.HistoryQuery{State: store.StateRefused, Since: since}
	var want []string
	for j := n - 1; j >= 0; j-- {
		if j%3 == 0 && !e.at(time.Duration(j/3-n)*time.Millisecond).Before(since) {
			want = append(want, fmt.Sprintf("r%04d", j))
		}
	}
	if diff := cmp.Diff(want, e.pagedIDs(q, 9)); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

// A Before that names no record (pruned meanwhile) is ErrNotFound, not an
// empty page that would look like the end of the history.
func testSearchBeforeUnknown(t *testing.T, e *env) {
	e.searchFixture()
	_, err := e.s.Search(e.ctx, store.HistoryQuery{Before: "gone"})
	wantErr(t, "Search before an unknown record", err, store.ErrNotFound)
}

// The limit: 100 when unset (or negative), at most 1000.
func testSearchLimit(t *testing.T, e *env) {
	e.manyRecords(store.MaxSearchLimit + 5)
	for _, tc := range []struct{ limit, want int }{
		{0, store.DefaultSearchLimit}, {-1, store.DefaultSearchLimit}, {7, 7},
		{store.MaxSearchLimit, store.MaxSearchLimit}, {store.MaxSearchLimit + 1, store.MaxSearchLimit}, {1 << 30, store.MaxSearchLimit},
	} {
		if got := len(e.search(store.HistoryQuery{Limit: tc.limit})); got != tc.want {
			t.Errorf("Limit %d: %d records, want %d", tc.limit, got, tc.want)
		}
	}
}

// The subject is stored by Record and by Enqueue, replaced by a new
// Record, and kept while a queued message's state changes; Get does not
// return it (the queue entry does not keep it).
func testSearchSubject(t *testing.T, e *env) {
	d := e.directRecord("d1", store.StateSent, e.base)
	d.Subject = "Re: Überweisung «März»"
	e.record([]*store.Record{d})
	q := e.msg("q1")
	q.Subject = "Scan from printer 4"
	e.enqueue(q)
	e.enqueue(e.msg("q2")) // no subject
	for id, want := range map[string]string{"d1": d.Subject, "q1": q.Subject, "q2": ""} {
		rec, _ := e.history(id)
		if rec.Subject != want {
			t.Errorf("History(%s).Subject = %q, want %q", id, rec.Subject, want)
		}
		if got := e.search(store.HistoryQuery{ID: id}); len(got) != 1 || got[0].Subject != want {
			t.Errorf("Search(ID %s) = %+v, want the subject %q", id, got, want)
		}
	}
	if diff := envelopeDiff(envelopeOf(q), *e.get("q1")); diff != "" {
		t.Errorf("Get(q1) (-want +got):\n%s", diff)
	}
	done := map[string]store.Recipient{"<rcpt@example.net>": rcptResult(store.RcptDelivered, "250 OK")}
	e.claim("w1", e.base, 10, time.Minute)
	e.finish("q1", "w1", store.Result{At: e.base, Counted: true, Rcpts: done})
	if rec := e.wantHistoryState("q1", store.StateDelivered); rec.Subject != q.Subject {
		t.Errorf("subject after delivery = %q, want %q", rec.Subject, q.Subject)
	}
	d.Subject = ""
	e.record([]*store.Record{d})
	if got := e.searchIDs(store.HistoryQuery{Subject: "Überweisung"}); len(got) != 0 {
		t.Errorf("a record replaced without its subject is still found by it: %v", got)
	}
}

// A queued message's record is found by its final state once delivered.
func testSearchFinalState(t *testing.T, e *env) {
	e.enqueue(e.msg("q1"))
	e.enqueue(e.msg("q2", withRcpts("<x@example.net>")))
	e.claim("w1", e.base, 10, time.Minute)
	e.finish("q1", "w1", store.Result{At: e.base, Counted: true,
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": rcptResult(store.RcptDelivered, "250 OK")}})
	e.finish("q2", "w1", store.Result{At: e.base, Counted: true,
		Rcpts: map[string]store.Recipient{"<x@example.net>": rcptResult(store.RcptFailed, "550 5.1.1 unknown")}})
	for state, want := range map[string][]string{
		store.StateDelivered: {"q1"}, store.StateBounced: {"q2"}, store.StateQueued: {},
	} {
		got := e.searchIDs(store.HistoryQuery{State: state})
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("state %s (-want +got):\n%s", state, diff)
		}
	}
}
