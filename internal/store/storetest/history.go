package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

var historyTests = []test{
	{"RecordDirect", testRecordDirect},
	{"EventOrder", testEventOrder},
	{"EventsOfQueuedMessage", testEventsOfQueued},
	{"EventsAtOneTimeInWriteOrder", testEventsInWriteOrder},
}

var pruneTests = []test{
	{"OldFinalRecordsOnly", testPrune},
	{"ManyRecords", testPruneMany},
}

var statsTests = []test{
	{"Empty", testStatsEmpty},
	{"DepthAndOldest", testStats},
}

var lifecycleTests = []test{
	{"Ping", testPing},
	{"Closed", testClosed},
}

func (e *env) record(recs []*store.Record, events ...*store.Event) {
	e.t.Helper()
	if err := e.s.Record(e.ctx, recs, events); err != nil {
		e.t.Fatalf("Record: %v", err)
	}
}

func (e *env) directRecord(id, state string, updated time.Time) *store.Record {
	return &store.Record{
		ID: id, Mode: "direct", Listener: "submission", Client: "app1", Account: "sender@example.com",
		From: "<sender@example.com>", Rcpts: []string{"<a@example.net>", "<b@example.net>"}, Size: 1234,
		HeaderID: "<" + id + "@app1>", Subject: "Report " + id, Received: updated.Add(-time.Second), State: state, Updated: updated,
	}
}

func testRecordDirect(t *testing.T, e *env) {
	first := e.directRecord("d1", store.StateSent, e.base)
	e.record([]*store.Record{first}, &store.Event{ID: "d1", At: e.at(-time.Second), Type: store.EventAccepted})
	rec, _ := e.history("d1")
	if diff := cmp.Diff(first, rec); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	second := e.directRecord("d1", store.StateRefused, e.at(time.Second))
	second.Rcpts = []string{"<a@example.net>"}
	e.record([]*store.Record{second}, &store.Event{ID: "d1", At: e.at(time.Second), Type: store.EventRefused,
		Rcpt: "<a@example.net>", Reply: "550 5.7.1 refused"})
	rec, _ = e.history("d1")
	if diff := cmp.Diff(second, rec); diff != "" {
		t.Errorf("replaced record (-want +got):\n%s", diff)
	}
	e.wantEvents("d1", "accepted : ", "refused <a@example.net>: 550 5.7.1 refused")
}

func testEventOrder(t *testing.T, e *env) {
	ev := func(d time.Duration, reply string) *store.Event {
		return &store.Event{ID: "d1", At: e.at(d), Type: store.EventAttempt, Reply: reply}
	}
	e.record([]*store.Record{e.directRecord("d1", store.StateSent, e.base)},
		ev(3*time.Second, "t3"), ev(time.Second, "t1 first"), ev(2*time.Second, "t2"))
	e.record(nil, ev(0, "t0"), ev(time.Second, "t1 second"))
	e.record(nil, ev(time.Second, "t1 third"))
	e.wantEvents("d1", "attempt : t0", "attempt : t1 first", "attempt : t1 second", "attempt : t1 third",
		"attempt : t2", "attempt : t3")
	_, events := e.history("d1")
	for i := 1; i < len(events); i++ {
		if events[i].At.Before(events[i-1].At) {
			t.Errorf("event %d at %v before event %d at %v", i, events[i].At, i-1, events[i-1].At)
		}
	}
}

func testEventsOfQueued(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	before, _ := e.history("m1")
	e.record(nil, &store.Event{ID: "m1", At: e.base, Type: store.EventNotified, Reply: "bounce-1"})
	after, _ := e.history("m1")
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("Record of events only changed the record (-before +after):\n%s", diff)
	}
	e.wantEvents("m1", "accepted : ", "notified : bounce-1")
}

// Events of one time keep the order they were written in, whoever wrote
// them: Record before the message was queued, Enqueue, an operator's
// Retry during an attempt, the attempt's Finish.
func testEventsInWriteOrder(t *testing.T, e *env) {
	m := e.msg("m1")
	at := m.Received
	e.record(nil, &store.Event{ID: "m1", At: at, Type: store.EventNotified, Reply: "before"})
	e.enqueue(m)
	e.claim("w1", e.base, 1, time.Minute)
	if err := e.s.Retry(e.ctx, "m1", at); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	rcpt := m.Rcpts[0].Addr
	e.finish("m1", "w1", store.Result{At: at, Counted: true, Reply: "250 OK",
		Rcpts: map[string]store.Recipient{rcpt: rcptResult(store.RcptDelivered, "250 OK")}})
	e.record(nil, &store.Event{ID: "m1", At: at, Type: store.EventNotified, Reply: "after"})
	e.wantEvents("m1", "notified : before", "accepted : ", "retry : ", "delivered "+rcpt+": 250 OK", "notified : after")
}

func testPrune(t *testing.T, e *env) {
	old, cutoff := e.at(-72*time.Hour), e.at(-24*time.Hour)
	e.record([]*store.Record{
		e.directRecord("direct-old", store.StateSent, e.at(-48*time.Hour)),
		e.directRecord("direct-refused-old", store.StateRefused, e.at(-25*time.Hour)),
		e.directRecord("direct-new", store.StateSent, e.at(-time.Hour)),
	}, &store.Event{ID: "direct-old", At: e.at(-48 * time.Hour), Type: store.EventAccepted})
	// Queued long ago and still queued: never pruned, whatever its age.
	e.enqueue(e.msg("queued-old", withReceived(old), withNext(e.at(time.Hour))))
	e.enqueue(e.msg("held-old", withReceived(old), withState(store.StateHeld)))
	// Delivered long ago, and delivered recently.
	e.enqueue(e.msg("delivered-old", withReceived(old), withNext(old)))
	e.enqueue(e.msg("delivered-new", withReceived(old), withNext(old.Add(time.Second))))
	e.claim("w1", old.Add(time.Second), 2, time.Hour)
	done := map[string]store.Recipient{"<rcpt@example.net>": rcptResult(store.RcptDelivered, "250 OK")}
	e.finish("delivered-old", "w1", store.Result{At: e.at(-50 * time.Hour), Counted: true, Rcpts: done})
	e.finish("delivered-new", "w1", store.Result{At: e.at(-time.Hour), Counted: true, Rcpts: done})

	n, err := e.s.Prune(e.ctx, cutoff)
	if err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	for _, id := range []string{"direct-old", "direct-refused-old", "delivered-old"} {
		_, _, err := e.s.History(e.ctx, id)
		wantErr(t, "History of pruned "+id, err, store.ErrNotFound)
	}
	for _, id := range []string{"direct-new", "queued-old", "held-old", "delivered-new"} {
		e.history(id)
	}
	e.wantEvents("queued-old", "accepted : ")
	if string(e.body("queued-old")) != string(bodyOf("queued-old")) {
		t.Error("Prune changed a queued message's body")
	}
	// The events went with their record: a new record with the same ID
	// starts a fresh trail.
	e.record([]*store.Record{e.directRecord("direct-old", store.StateSent, e.base)})
	e.wantEvents("direct-old")
	if n, err := e.s.Prune(e.ctx, cutoff); err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v; want 0", n, err)
	}
}

func testPruneMany(t *testing.T, e *env) {
	const n = 1234
	var recs []*store.Record
	var events []*store.Event
	for i := range n {
		id := fmt.Sprintf("d%04d", i)
		recs = append(recs, e.directRecord(id, store.StateSent, e.at(-48*time.Hour)))
		events = append(events, &store.Event{ID: id, At: e.at(-48 * time.Hour), Type: store.EventAccepted})
	}
	e.record(recs, events...)
	e.record([]*store.Record{e.directRecord("recent", store.StateSent, e.base)})
	got, err := e.s.Prune(e.ctx, e.at(-24*time.Hour))
	if err != nil || got != n {
		t.Fatalf("Prune = %d, %v; want %d", got, err, n)
	}
	e.history("recent")
}

func testStatsEmpty(t *testing.T, e *env) {
	st, err := e.s.Stats(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Depth) != 0 || !st.Oldest.IsZero() {
		t.Errorf("Stats of an empty queue = %+v", st)
	}
}

func testStats(t *testing.T, e *env) {
	e.enqueue(e.msg("held-oldest", withAccount("a"), withState(store.StateHeld), withReceived(e.at(-5*time.Hour))))
	e.enqueue(e.msg("a1", withAccount("a"), withReceived(e.at(-3*time.Hour))))
	e.enqueue(e.msg("a2", withAccount("a"), withReceived(e.at(-2*time.Hour))))
	// The oldest queued message is not in the first group of the
	// account order: every group counts.
	e.enqueue(e.msg("b0", withAccount("b"), withReceived(e.at(-4*time.Hour))))
	e.enqueue(e.msg("b1", withAccount("b"), withReceived(e.at(-time.Hour))))
	e.enqueue(e.msg("b2", withAccount("b"), withReceived(e.at(-time.Minute))))
	e.claim("w1", e.base, 10, time.Hour) // leased messages are still queued
	e.finish("b2", "w1", store.Result{At: e.base, Counted: true,
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": rcptResult(store.RcptDelivered, "250 OK")}})
	st, err := e.s.Stats(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[store.DepthKey]int{
		{State: store.StateQueued, Account: "a"}: 2,
		{State: store.StateHeld, Account: "a"}:   1,
		{State: store.StateQueued, Account: "b"}: 2,
	}
	if diff := cmp.Diff(want, st.Depth); diff != "" {
		t.Errorf("Depth (-want +got):\n%s", diff)
	}
	if !st.Oldest.Equal(e.at(-4 * time.Hour)) {
		t.Errorf("Oldest = %v, want %v (the held message does not count)", st.Oldest, e.at(-4*time.Hour))
	}
}

func testPing(t *testing.T, e *env) {
	if err := e.s.Ping(e.ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testClosed(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, s := e.ctx, e.s
	calls := map[string]func() error{
		"Enqueue": func() error { return s.Enqueue(ctx, e.msg("m2")) },
		"Body":    func() error { _, err := s.Body(ctx, "m1"); return err },
		"Claim": func() error {
			_, err := s.Claim(ctx, "w1", e.base, 1, time.Minute, nil)
			return err
		},
		"Extend":        func() error { return s.Extend(ctx, "m1", "w1", e.base) },
		"Finish":        func() error { return s.Finish(ctx, "m1", "w1", store.Result{At: e.base}) },
		"ReleaseLeases": func() error { return s.ReleaseLeases(ctx, "w1") },
		"Get":           func() error { _, err := s.Get(ctx, "m1"); return err },
		"List":          func() error { _, err := s.List(ctx, store.Filter{}); return err },
		"Hold":          func() error { return s.Hold(ctx, "m1") },
		"Release":       func() error { return s.Release(ctx, "m1") },
		"Retry":         func() error { return s.Retry(ctx, "m1", e.base) },
		"Delete":        func() error { return s.Delete(ctx, "m1") },
		"Record": func() error {
			return s.Record(ctx, []*store.Record{e.directRecord("d1", store.StateSent, e.base)}, nil)
		},
		"History": func() error { _, _, err := s.History(ctx, "m1"); return err },
		"Search":  func() error { _, err := s.Search(ctx, store.HistoryQuery{}); return err },
		"Prune":   func() error { _, err := s.Prune(ctx, e.base); return err },
		"Stats":   func() error { _, err := s.Stats(ctx); return err },
		"Ping":    func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s after Close: %v, want ErrUnavailable", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
