package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// testMsg is a due message with one recipient and a small body.
func testMsg(id string) *store.NewMessage {
	now := time.Now()
	body := []byte("Subject: " + id + "\r\n\r\nsecret-body-marker " + id + "\r\n")
	return &store.NewMessage{
		Envelope: store.Envelope{
			ID: id, Account: "sender@example.com", Listener: "printers", Client: "10.0.0.7",
			From: "<sender@example.com>", Rcpts: []store.Recipient{{Addr: "<rcpt@example.net>"}},
			Size: int64(len(body)), Received: now, Expires: now.Add(time.Hour), NextAttempt: now.Add(-time.Minute),
		},
		Body: bytes.NewReader(body),
	}
}

// delivered is the result of an attempt that delivered testMsg.
func delivered(at time.Time) store.Result {
	return store.Result{At: at, Counted: true, Reply: "250 2.0.0 OK",
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {State: store.RcptDelivered, LastReply: "250 2.0.0 OK"}}}
}

// Several instances (stores on one database) claim at once, from many
// goroutines each: every message is handed out once, to one owner, while
// the leases are live.
func TestSeveralInstancesClaimEachMessageOnce(t *testing.T) {
	const instances, claimersEach, messages = 4, 4, 400
	dsn := newTestDB(t).store(t)
	stores := make([]*Store, instances)
	for i := range stores {
		stores[i] = openTest(t, dsn, Options{MaxConns: 4})
	}
	var batch []*store.NewMessage
	for i := range messages {
		m := testMsg(fmt.Sprintf("m%04d", i))
		m.Account = fmt.Sprintf("acct%d@example.com", i%5)
		batch = append(batch, m)
	}
	if err := stores[0].Enqueue(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	owners := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, instances*claimersEach)
	for i, s := range stores {
		for c := range claimersEach {
			owner := fmt.Sprintf("instance%d-worker%d", i, c)
			wg.Go(func() {
				for {
					got, err := s.Claim(t.Context(), owner, time.Now(), 3, time.Hour, nil)
					if err != nil {
						errs <- err
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, c := range got {
						if prev, dup := owners[c.ID]; dup {
							errs <- fmt.Errorf("%s claimed by %s and %s", c.ID, prev, owner)
						}
						owners[c.ID] = owner
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(owners) != messages {
		t.Errorf("%d messages claimed, want %d", len(owners), messages)
	}
	perInstance := map[string]int{}
	for _, o := range owners {
		perInstance[o[:9]]++
	}
	t.Logf("claims per instance: %v", perInstance)
}

// An owner's lease runs out (its instance stalled); another instance
// takes the message over and delivers it; the first owner's late Finish
// and Extend get store.ErrLeaseLost and change nothing.
func TestExpiredLeaseTakenOverByAnotherInstance(t *testing.T) {
	dsn := newTestDB(t).store(t)
	a, b := openTest(t, dsn, Options{}), openTest(t, dsn, Options{})
	ctx := t.Context()
	if err := a.Enqueue(ctx, testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if got, err := a.Claim(ctx, "A", now, 1, time.Minute, nil); err != nil || len(got) != 1 {
		t.Fatalf("A's claim: %v, %v", got, err)
	}
	if got, err := b.Claim(ctx, "B", now.Add(59*time.Second), 1, time.Minute, nil); err != nil || len(got) != 0 {
		t.Fatalf("B's claim within A's lease: %d messages, %v", len(got), err)
	}
	got, err := b.Claim(ctx, "B", now.Add(61*time.Second), 1, time.Minute, nil)
	if err != nil || len(got) != 1 || got[0].Owner != "B" {
		t.Fatalf("B's claim after A's lease ran out: %v, %v", got, err)
	}
	if err := b.Finish(ctx, "m1", "B", delivered(now.Add(62*time.Second))); err != nil {
		t.Fatalf("B's Finish: %v", err)
	}
	err = a.Finish(ctx, "m1", "A", delivered(now.Add(63*time.Second)))
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("A's Finish after the takeover: %v, want ErrLeaseLost", err)
	}
	if err := a.Extend(ctx, "m1", "A", now.Add(time.Hour)); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("A's Extend after the takeover: %v, want ErrLeaseLost", err)
	}
	rec, events, err := a.History(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != store.StateDelivered || len(events) != 2 || !events[1].At.Equal(now.Add(62*time.Second).Truncate(time.Microsecond)) {
		t.Errorf("history after the takeover: %s, %d events", rec.State, len(events))
	}
}

// A message whose lease is held in one instance's open Finish is passed
// by another instance's claim (SKIP LOCKED), not waited for.
func TestClaimPassesByALockedMessage(t *testing.T) {
	dsn := newTestDB(t).store(t)
	a, b := openTest(t, dsn, Options{}), openTest(t, dsn, Options{})
	ctx := t.Context()
	if err := a.Enqueue(ctx, testMsg("locked"), testMsg("free")); err != nil {
		t.Fatal(err)
	}
	c, err := a.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rollback(tx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM messages WHERE id = 'locked' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	got, err := b.Claim(ctx, "B", time.Now(), 10, time.Minute, nil)
	if err != nil || len(got) != 1 || got[0].ID != "free" {
		t.Fatalf("claim beside a locked message: %v, %v", got, err)
	}
}
