package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// A search over a large history whose context ends must stop at once
// (the console gives each search a deadline): it fails with the
// context's error, and the connections it used serve the next search
// and the next write.
const (
	// slowSearch: the history grows until a search that reads all of it
	// takes longer than this.
	slowSearch = time.Second
	// searchDeadline is the deadline of the searches that must stop.
	searchDeadline = 50 * time.Millisecond
	// stopWithin bounds how late after its deadline a search returns:
	// well under slowSearch, so that a search that runs to its end fails.
	stopWithin = 400 * time.Millisecond
	// slowHistoryCap bounds the records stored to make a search slow.
	slowHistoryCap = 1 << 14
)

// The history's recipients are long runs of one letter, and the searches
// look for a shorter run of it followed by another letter: the substring
// match tries every position of every recipient and compares most of the
// searched text at each, so that a history of a few megabytes, written
// in a moment, takes long to search. What is tested is that the search
// stops, not how fast it is.
var (
	slowRcpt   = "<" + strings.Repeat("a", 400) + "%d@example.net>"
	nearly     = strings.Repeat("a", 120)
	slowNeedle = nearly + "b" // in the newest record's recipients only
)

func testSearchDeadline(t *testing.T, e *env) {
	e.slowHistory()
	cases := []struct {
		name string
		q    store.HistoryQuery
	}{
		// Nothing matches: the search reads the history before its first
		// record comes back.
		{"no match", store.HistoryQuery{Rcpt: nearly + "c"}},
		// The newest record matches at once, then the search reads the
		// rest of the history for the next one.
		{"a match, then none", store.HistoryQuery{Rcpt: slowNeedle}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A few at once show that none leaves a connection busy.
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { e.searchStops(t, tc.q) })
			}
			wg.Wait()
		})
	}
	e.searchAndWriteAfterDeadlines()
}

// searchStops runs q under searchDeadline and checks that it fails with
// the deadline soon after it.
func (e *env) searchStops(t *testing.T, q store.HistoryQuery) {
	ctx, cancel := context.WithTimeout(e.ctx, searchDeadline)
	defer cancel()
	start := time.Now()
	recs, err := e.s.Search(ctx, q)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Search(%.40q…) with a deadline of %v: %d records, error %v; want context.DeadlineExceeded", q.Rcpt, searchDeadline, len(recs), err)
	}
	if took > searchDeadline+stopWithin {
		t.Errorf("Search(%.40q…) with a deadline of %v returned after %v", q.Rcpt, searchDeadline, took)
	}
}

// searchAndWriteAfterDeadlines checks that the searches that stopped
// left the store whole: a search and a write succeed.
func (e *env) searchAndWriteAfterDeadlines() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	recs, err := e.s.Search(ctx, store.HistoryQuery{ID: "slow-newest"})
	if err != nil || len(recs) != 1 {
		e.t.Fatalf("Search after the deadlines: %d records, %v", len(recs), err)
	}
	after := e.directRecord("after", store.StateSent, e.base)
	if err := e.s.Record(ctx, []*store.Record{after}, nil); err != nil {
		e.t.Fatalf("Record after the deadlines: %v", err)
	}
	e.history("after")
}

// slowHistory stores records until a search that matches none of them
// takes longer than slowSearch; the newest record holds slowNeedle. How
// many that takes depends on the engine and the machine (and -race), so
// it is measured: each round grows the history by what the last search's
// time says is missing, at least twice and at most 16 times over.
func (e *env) slowHistory() {
	e.t.Helper()
	rcpts := make([]string, 20)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf(slowRcpt, i)
	}
	newest := e.directRecord("slow-newest", store.StateSent, e.base)
	newest.Rcpts = append([]string{"<" + slowNeedle + "@example.net>"}, rcpts...)
	e.record([]*store.Record{newest})
	start := time.Now()
	for n, add := 0, 8; n < slowHistoryCap; n += add {
		e.addSlowRecords(n, add, rcpts)
		took, slow := e.searchTakes(slowSearch)
		if slow {
			e.t.Logf("a search of %d records takes longer than %v (%v to find how many)", n+add, slowSearch, time.Since(start))
			return
		}
		grow := min(16, max(2, 1.5*slowSearch.Seconds()/max(took.Seconds(), 1e-3)))
		add = int(float64(n+add) * (grow - 1))
	}
	e.t.Fatalf("a search of %d records takes less than %v: too fast to test a deadline", slowHistoryCap, slowSearch)
}

// addSlowRecords records n records from the first'th, older than the
// ones before, each with rcpts.
func (e *env) addSlowRecords(first, n int, rcpts []string) {
	e.t.Helper()
	const batch = 64
	for i := first; i < first+n; i += batch {
		var recs []*store.Record
		for j := i; j < min(i+batch, first+n); j++ {
			r := e.directRecord(fmt.Sprintf("slow%05d", j), store.StateSent, e.at(-time.Duration(j+1)*time.Millisecond))
			r.Rcpts = rcpts
			recs = append(recs, r)
		}
		e.record(recs)
	}
}

// searchTakes runs a search that matches nothing under a deadline of d:
// how long it took, or that it took longer.
func (e *env) searchTakes(d time.Duration) (time.Duration, bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	start := time.Now()
	_, err := e.s.Search(ctx, store.HistoryQuery{Rcpt: nearly + "c"})
	if errors.Is(err, context.DeadlineExceeded) {
		return d, true
	}
	if err != nil {
		e.t.Fatalf("Search: %v", err)
	}
	return time.Since(start), false
}
