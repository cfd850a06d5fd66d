package storetest

import (
	"context"
	"errors"
	"fmt"
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
	slowHistoryCap = 1 << 13
	// slowRcpts is the number of recipients of each record: a recipient
	// search folds and matches each one, which makes reading a record
	// dear and writing it cheap.
	slowRcpts = 2000
	// needle is in the newest record's recipients only.
	needle = "needle.example"
)

func testSearchDeadline(t *testing.T, e *env) {
	e.slowHistory()
	cases := []struct {
		name string
		q    store.HistoryQuery
	}{
		// Nothing matches: the search reads the history before its first
		// record comes back.
		{"no match", store.HistoryQuery{Rcpt: "nobody.example"}},
		// The newest record matches at once, then the search reads the
		// rest of the history for the next one.
		{"a match, then none", store.HistoryQuery{Rcpt: needle}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// More at once than an engine has readers would be too slow
			// to test; a few show that none is left busy.
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
		t.Errorf("Search(%+v) with a deadline of %v: %d records, error %v; want context.DeadlineExceeded", q, searchDeadline, len(recs), err)
	}
	if took > searchDeadline+stopWithin {
		t.Errorf("Search(%+v) with a deadline of %v returned after %v", q, searchDeadline, took)
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

// slowHistory stores records, each with slowRcpts recipients, doubling
// them until a recipient search that matches none of them takes longer
// than slowSearch; the newest record holds needle. How many that takes
// depends on the engine and the machine (and -race), so it is measured.
func (e *env) slowHistory() {
	e.t.Helper()
	rcpts := make([]string, slowRcpts)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("<user%04d@example.net>", i)
	}
	newest := e.directRecord("slow-newest", store.StateSent, e.base)
	newest.Rcpts = append([]string{"<x@" + needle + ">"}, rcpts...)
	e.record([]*store.Record{newest})
	start := time.Now()
	for n, add := 1, 32; n < slowHistoryCap; n, add = n+add, n+add {
		e.addSlowRecords(n, add, rcpts)
		if e.searchTakes(slowSearch) {
			e.t.Logf("a search of %d records takes longer than %v (%v to make them)", n+add, slowSearch, time.Since(start))
			return
		}
	}
	e.t.Fatalf("a search of %d records takes less than %v: too fast to test a deadline", slowHistoryCap, slowSearch)
}

// addSlowRecords records n records from the first'th, older than the
// ones before.
func (e *env) addSlowRecords(first, n int, rcpts []string) {
	e.t.Helper()
	const batch = 32
	for i := first; i < first+n; i += batch {
		var recs []*store.Record
		for j := i; j < min(i+batch, first+n); j++ {
			r := e.directRecord(fmt.Sprintf("slow%05d", j), store.StateSent, e.at(-time.Duration(j)*time.Millisecond))
			r.Rcpts = rcpts
			recs = append(recs, r)
		}
		e.record(recs)
	}
}

// searchTakes reports whether a search that matches nothing takes longer
// than d.
func (e *env) searchTakes(d time.Duration) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	_, err := e.s.Search(ctx, store.HistoryQuery{Rcpt: "nobody.example"})
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if err != nil {
		e.t.Fatalf("Search: %v", err)
	}
	return false
}
