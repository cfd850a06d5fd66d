package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// testMsg is a due message with one recipient and the body bodyOf(id).
func testMsg(id string) *store.NewMessage {
	now := time.Now()
	return &store.NewMessage{
		Envelope: store.Envelope{
			ID: id, Account: "sender@example.com", Listener: "printers", Client: "10.0.0.7",
			From:     "<sender@example.com>",
			Rcpts:    []store.Recipient{{Addr: "<rcpt@example.net>", State: store.RcptPending}},
			Received: now, Expires: now.Add(time.Hour), NextAttempt: now,
		},
		Body: bytes.NewReader(bodyOf(id)),
	}
}

func bodyOf(id string) []byte {
	return []byte("Subject: " + id + "\r\n\r\nsecret-body-marker " + id + "\r\n")
}

// stallWriter blocks the writer inside a request of its own until the
// returned release is called (also at cleanup), so that the requests
// sent meanwhile wait in the channel and form the next batches.
func stallWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered, gate, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.submit(context.Background(), &request{run: func(*batch) error {
			close(entered)
			<-gate
			return nil
		}})
	}()
	<-entered
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(gate)
			if err := <-done; err != nil {
				t.Errorf("stalling request: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitRequests waits until n requests wait in the writer's channel.
func waitRequests(t *testing.T, s *Store, n int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d requests waiting", n), func() bool {
		return s.group.Waiting() >= n
	})
}

// enqueueAll enqueues one message per ID, each from its own goroutine,
// and returns their errors once all have returned.
func enqueueAll(s *Store, ids []string) []error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = s.Enqueue(context.Background(), testMsg(id)) })
	}
	wg.Wait()
	return errs
}

func seqIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return ids
}

func TestConcurrentEnqueuesShareCommits(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	c0, m0 := s.CommitStats()
	if err := errors.Join(enqueueAll(s, seqIDs("m", 200))...); err != nil {
		t.Fatal(err)
	}
	c1, m1 := s.CommitStats()
	commits, messages := c1-c0, m1-m0
	t.Logf("200 concurrent enqueues: %d commits, %.1f messages per commit", commits, float64(messages)/float64(commits))
	if messages != 200 || commits >= messages {
		t.Errorf("%d commits for %d messages: concurrent enqueues did not share commits", commits, messages)
	}
	if f := s.fallbacks.Load(); f != 0 {
		t.Errorf("%d batches ran again with savepoints; no request failed", f)
	}
}

func TestBatchHoldsMaxBatchMessages(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{MaxBatch: 64})
	release := stallWriter(t, s)
	c0, m0 := s.CommitStats()
	var errs []error
	done := make(chan struct{})
	go func() { errs = enqueueAll(s, seqIDs("m", 200)); close(done) }()
	waitRequests(t, s, 200)
	release()
	<-done
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c1, m1 := s.CommitStats()
	// The stalling request's commit, then 64 + 64 + 64 + 8.
	if c1-c0 != 5 || m1-m0 != 200 {
		t.Errorf("CommitStats moved by %d commits and %d messages, want 5 and 200", c1-c0, m1-m0)
	}
	list, err := s.List(t.Context(), store.Filter{})
	if err != nil || len(list) != 200 {
		t.Fatalf("List: %d messages, %v", len(list), err)
	}
}

// A request that fails inside a batch leaves the others of the batch
// alone: each runs in its own savepoint.
func TestFailingRequestDoesNotFailItsBatch(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("existing")); err != nil {
		t.Fatal(err)
	}
	release := stallWriter(t, s)
	c0, _ := s.CommitStats()
	readErr := errors.New("client went away")
	broken := testMsg("broken")
	broken.Body = io.MultiReader(bytes.NewReader(make([]byte, 300<<10)), &errReader{readErr})
	calls := map[string]func() error{
		"good1":     func() error { return s.Enqueue(ctx, testMsg("good1")) },
		"duplicate": func() error { return s.Enqueue(ctx, testMsg("existing")) },
		"body":      func() error { return s.Enqueue(ctx, broken) },
		"hold":      func() error { return s.Hold(ctx, "unknown") },
		"finish":    func() error { return s.Finish(ctx, "existing", "nobody", store.Result{Counted: true}) },
		"good2":     func() error { return s.Enqueue(ctx, testMsg("good2")) },
	}
	errs := runConcurrently(calls, func() { waitRequests(t, s, len(calls)); release() })
	wantIs := map[string]error{"duplicate": engine.ErrDuplicate, "body": readErr, "hold": store.ErrNotFound, "finish": store.ErrLeaseLost}
	for name, err := range errs {
		if want := wantIs[name]; (want == nil && err != nil) || !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	if c1, _ := s.CommitStats(); c1-c0 != 2 {
		t.Errorf("%d commits, want 2 (the stall and one batch)", c1-c0)
	}
	for _, id := range []string{"good1", "good2", "existing"} {
		if got, err := storetest.ReadBody(context.Background(), s, id); err != nil || !bytes.Equal(got, bodyOf(id)) {
			t.Errorf("body of %s: %v", id, err)
		}
	}
	if _, err := s.Get(ctx, "broken"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the message with the unreadable body was stored: %v", err)
	}
}

// A batch whose requests can all run again runs without savepoints; when
// one of them fails, the batch runs again with savepoints: the failing
// request fails alone and the others commit, in one commit.
func TestFailingRequestInAFastBatch(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("existing")); err != nil {
		t.Fatal(err)
	}
	if f := s.fallbacks.Load(); f != 0 {
		t.Fatalf("%d batches fell back to savepoints before any request failed", f)
	}
	release := stallWriter(t, s)
	c0, _ := s.CommitStats()
	calls := map[string]func() error{
		"good1":     func() error { return s.Enqueue(ctx, testMsg("good1")) },
		"duplicate": func() error { return s.Enqueue(ctx, testMsg("existing")) },
		"finish":    func() error { return s.Finish(ctx, "existing", "nobody", store.Result{Counted: true}) },
		"good2":     func() error { return s.Enqueue(ctx, testMsg("good2")) },
	}
	errs := runConcurrently(calls, func() { waitRequests(t, s, len(calls)); release() })
	wantIs := map[string]error{"duplicate": engine.ErrDuplicate, "finish": store.ErrLeaseLost}
	for name, err := range errs {
		if want := wantIs[name]; (want == nil && err != nil) || !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	if c1, _ := s.CommitStats(); c1-c0 != 2 {
		t.Errorf("%d commits, want 2 (the stall and one batch)", c1-c0)
	}
	if f := s.fallbacks.Load(); f != 1 {
		t.Errorf("%d fallbacks to savepoints, want 1", f)
	}
	for _, id := range []string{"good1", "good2", "existing"} {
		if got, err := storetest.ReadBody(context.Background(), s, id); err != nil || !bytes.Equal(got, bodyOf(id)) {
			t.Errorf("body of %s: %v", id, err)
		}
	}
	if events := eventTypes(t, s, "existing"); len(events) != 1 {
		t.Errorf("events of the message the failed requests named: %v, want only accepted", events)
	}
}

// eventTypes lists the types of a message's events.
func eventTypes(t *testing.T, s *Store, id string) []string {
	t.Helper()
	_, events, err := s.History(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	return types
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// runConcurrently starts every call in its own goroutine, runs then, and
// returns each call's error by name.
func runConcurrently(calls map[string]func() error, then func()) map[string]error {
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Go(func() {
			err := call()
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	then()
	wg.Wait()
	return errs
}

// A caller whose context ends while its request waits gets the context's
// error, and the request is not run.
func TestCancelledWhileWaiting(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	release := stallWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Enqueue(ctx, testMsg("m1")) }()
	waitRequests(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with a cancelled context: %v", err)
	}
	release()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an abandoned request was run: %v", err)
	}
}

// A full database is ErrUnavailable with its cause, for the request that
// hit it; the store keeps working for what fits.
func TestDatabaseFullIsUnavailable(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{maxPageCount: 256}) // 1 MiB of 4 KiB pages
	ctx := t.Context()
	big := testMsg("big")
	big.Body = bytes.NewReader(make([]byte, 2<<20))
	err := s.Enqueue(ctx, big)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Enqueue into a full database: %v, want ErrUnavailable", err)
	}
	t.Logf("full: %v", err)
	if _, err := s.Get(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the message that did not fit is there: %v", err)
	}
	if err := s.Enqueue(ctx, testMsg("small")); err != nil {
		t.Errorf("Enqueue of a small message after the full one: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// When SQLite rolls a whole batch back (here: database full), the request
// that hit the error fails; the others run again in a new transaction,
// except an Enqueue that already consumed a body it cannot rewind.
func TestDatabaseFullInABatch(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{maxPageCount: 256})
	ctx := t.Context()
	big := testMsg("big")
	big.Body = bytes.NewReader(make([]byte, 2<<20))
	oneShot := func(id string) *store.NewMessage {
		m := testMsg(id)
		m.Body = io.MultiReader(m.Body) // not an io.Seeker
		return m
	}
	calls := []namedCall{
		{"seekable before", func() error { return s.Enqueue(ctx, testMsg("seekable-before")) }},
		{"one-shot before", func() error { return s.Enqueue(ctx, oneShot("oneshot-before")) }},
		{"big", func() error { return s.Enqueue(ctx, big) }},
		{"hold after", func() error { return s.Hold(ctx, "unknown") }},
		{"one-shot after", func() error { return s.Enqueue(ctx, oneShot("oneshot-after")) }},
	}
	errs := runInOrder(t, s, calls)
	want := map[string]error{"one-shot before": store.ErrUnavailable, "big": store.ErrUnavailable, "hold after": store.ErrNotFound}
	for _, c := range calls {
		if err := errs[c.name]; (want[c.name] == nil && err != nil) || !errors.Is(err, want[c.name]) {
			t.Errorf("%s: %v, want %v", c.name, err, want[c.name])
		}
	}
	for _, id := range []string{"seekable-before", "oneshot-after"} {
		if got, err := storetest.ReadBody(context.Background(), s, id); err != nil || !bytes.Equal(got, bodyOf(id)) {
			t.Errorf("body of %s: %v", id, err)
		}
	}
	for _, id := range []string{"oneshot-before", "big"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s was refused but is stored: %v", id, err)
		}
	}
}

type namedCall struct {
	name string
	call func() error
}

// runInOrder stalls the writer, sends the calls one after the other so
// that they form one batch in this order, releases the writer and returns
// each call's error by name.
func runInOrder(t *testing.T, s *Store, calls []namedCall) map[string]error {
	t.Helper()
	release := stallWriter(t, s)
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			err := c.call()
			mu.Lock()
			errs[c.name] = err
			mu.Unlock()
		})
		waitRequests(t, s, i+1)
	}
	release()
	wg.Wait()
	return errs
}
