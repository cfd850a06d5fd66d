package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// newRequest is what Enqueue hands the writer.
func newRequest(t *testing.T, msgs ...*store.NewMessage) *request {
	t.Helper()
	r := &request{msgs: msgs}
	r.SetContext(t.Context())
	for _, m := range msgs {
		e, err := engine.NormalizeNew(m)
		if err != nil {
			t.Fatal(err)
		}
		r.envs = append(r.envs, e)
	}
	return r
}

// newRecord is what Record hands the writer.
func newRecord(t *testing.T, events ...*store.Event) *request {
	r := &request{events: events}
	r.SetContext(t.Context())
	return r
}

// In one batch, requests that fail (a duplicate ID, a body that cannot
// be read, before or after chunks of it were stored) leave the others
// alone, and the messages of a failed request are stored none.
func TestBatchRequestsFailAlone(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			opts := Options{}
			if sealed {
				opts.Sealer = storetest.NewSealer(t)
			}
			s := openTest(t, newTestDB(t).store(t), opts)
			if err := s.Enqueue(t.Context(), testMsg("old")); err != nil {
				t.Fatal(err)
			}
			cause := errors.New("spool file unreadable")
			long := func(id string, body []byte) *store.NewMessage {
				m := testMsg(id)
				m.Body = bytes.NewReader(body)
				return m
			}
			brokenLong := testMsg("broken-long")
			brokenLong.Body = &storetest.FailingReader{Left: 2*engine.ChunkSize + 10, Err: cause}
			brokenShort := testMsg("broken-short")
			brokenShort.Body = &storetest.FailingReader{Left: 10, Err: cause}
			reqs := []*request{
				newRequest(t, testMsg("good1")),
				newRequest(t, testMsg("first-of-two"), testMsg("old")), // a duplicate: neither is stored
				newRequest(t, brokenLong),
				newRequest(t, long("good-long", bytes.Repeat([]byte("x"), 3*engine.ChunkSize/2))),
				newRequest(t, testMsg("good2"), brokenShort),
				newRecord(t, &store.Event{ID: "old", At: time.Now(), Type: store.EventNotified, Reply: "bounce-1"}),
				newRequest(t, testMsg("good3")),
			}
			results := s.runBatch(t.Context(), reqs, &bodyBuffers{})
			want := []error{nil, engine.ErrDuplicate, cause, nil, cause, nil, nil}
			for i, err := range results {
				if want[i] == nil && err != nil || !errors.Is(err, want[i]) {
					t.Errorf("request %d: %v, want %v", i, err, want[i])
				}
			}
			stored := map[string]bool{"good1": true, "good-long": true, "good3": true, "old": true,
				"first-of-two": false, "broken-long": false, "good2": false, "broken-short": false}
			for id, want := range stored {
				_, err := s.Get(t.Context(), id)
				if got := err == nil; got != want {
					t.Errorf("%s stored: %v, want %v (%v)", id, got, want, err)
				}
				_, _, err = s.History(t.Context(), id)
				if got := err == nil; got != want {
					t.Errorf("history of %s: %v, want %v (%v)", id, got, want, err)
				}
			}
			if got, err := storetest.ReadBody(context.Background(), s, "good-long"); err != nil || len(got) != 3*engine.ChunkSize/2 {
				t.Errorf("Body(good-long): %d bytes, %v", len(got), err)
			}
			_, events, _ := s.History(t.Context(), "old")
			if len(events) != 2 || events[1].Type != store.EventNotified {
				t.Errorf("the recorded event is missing: %d events", len(events))
			}
		})
	}
}

// Concurrent Enqueues share commits.
func TestEnqueueGroupCommit(t *testing.T) {
	s := openTest(t, newTestDB(t).store(t), Options{})
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = s.Enqueue(context.Background(), testMsg(fmt.Sprintf("m%02d", i))) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	commits, messages := s.CommitStats()
	t.Logf("%d messages in %d commits", messages, commits)
	if messages != n || commits >= n {
		t.Errorf("%d messages in %d commits, want %d in fewer", messages, commits, n)
	}
}

// With the sealer down, messages are refused as unavailable, naming the
// cause; writes without bodies go on.
func TestSealerDown(t *testing.T) {
	sealer := storetest.NewSealer(t)
	s := openTest(t, newTestDB(t).store(t), Options{Sealer: sealer})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("before")); err != nil {
		t.Fatal(err)
	}
	sealer.Fail.Store(true)
	if err := s.Enqueue(ctx, testMsg("m1")); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, storetest.ErrSealerDown) {
		t.Errorf("Enqueue with the sealer down: %v, want ErrUnavailable wrapping the cause", err)
	}
	if _, err := storetest.ReadBody(context.Background(), s, "before"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Body with the sealer down and the key not cached: %v, want ErrUnavailable", err)
	}
	if err := s.Record(ctx, nil, []*store.Event{{ID: "before", Type: store.EventNotified}}); err != nil {
		t.Errorf("Record with the sealer down: %v", err)
	}
	sealer.Fail.Store(false)
	if err := s.Enqueue(ctx, testMsg("m1")); err != nil {
		t.Errorf("Enqueue once the sealer is back: %v", err)
	}
}

// Free text that PostgreSQL's text cannot hold (NUL, bytes that are not
// UTF-8) is cleaned; an address that is not text refuses the message, as
// the caller's mistake.
func TestTextThatIsNotUTF8(t *testing.T) {
	s := openTest(t, newTestDB(t).store(t), Options{})
	ctx := t.Context()
	m := testMsg("m1")
	m.HeaderID = "<id\x00\xff@client>"
	m.LastReply = "451 \xfe try later"
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatalf("Enqueue with a broken Message-ID: %v", err)
	}
	if got := s.mustGet(t, "m1").HeaderID; got != "<id\uFFFD@client>" {
		t.Errorf("HeaderID stored as %q", got)
	}
	if _, err := s.Claim(ctx, "w1", time.Now(), 1, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	res := store.Result{At: time.Now(), Counted: true, Reply: "451 4.0.0 \x00odd\xc3", NextAttempt: time.Now(),
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {State: store.RcptPending, LastReply: "451 \xc3\x28"}}}
	if err := s.Finish(ctx, "m1", "w1", res); err != nil {
		t.Fatalf("Finish with a broken reply: %v", err)
	}
	if got := s.mustGet(t, "m1"); got.LastReply != "451 4.0.0 odd\uFFFD" || got.Rcpts[0].LastReply != "451 \uFFFD(" {
		t.Errorf("replies stored as %q and %q", got.LastReply, got.Rcpts[0].LastReply)
	}
	bad := testMsg("m2")
	bad.Rcpts = []store.Recipient{{Addr: "<r\xff@example.net>"}}
	if err := s.Enqueue(ctx, bad); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Enqueue to an address that is not UTF-8: %v, want the caller's error", err)
	}
	rec := &store.Record{ID: "d1", Mode: "direct", From: "<a\x00@b>", Rcpts: []string{"<\xff>"}, State: store.StateSent}
	if err := s.Record(ctx, []*store.Record{rec}, nil); err != nil {
		t.Fatalf("Record with broken text: %v", err)
	}
	if rec.Rcpts[0] != "<\xff>" {
		t.Error("Record changed the caller's record")
	}
}

func (s *Store) mustGet(t *testing.T, id string) *store.Envelope {
	t.Helper()
	e, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
