package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Review finding: the poll timer is Reset after every dispatch, and a
// finished delivery's wake() does not set claimable. Under a steady trickle
// of messages handed over fresh (each one's end wakes the scheduler) the
// timer never fires, so a retry that became due is never claimed.
func TestReviewDueRetryStarvedByFreshTraffic(t *testing.T) {
	cfg := testConfig()
	cfg.Poll = 300 * time.Millisecond
	h := newHarness(t, cfg)
	var mu sync.Mutex
	var deferID string
	attempts := 0
	h.tr.body = func(_ context.Context, env transport.Envelope, _ []string) (transport.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		if env.ID == deferID {
			attempts++
			if attempts == 1 {
				return transport.Result{}, reply(451, smtp.EnhancedCode{4, 2, 1}, "later")
			}
		}
		return transport.Result{Reply: "250 2.0.0 OK fake"}, nil
	}
	h.start(h.q)
	mu.Lock()
	deferID = transport.NewID()
	mu.Unlock()
	// The message to be deferred, submitted with that ID.
	d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: deferID, Account: acct, From: "<s@example.com>"})
	_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	if _, err := d.Body(context.Background(), stringMessage("Subject: d\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first attempt deferred", func() bool {
		e := h.env(deferID)
		owner, _ := h.st.lease(deferID)
		return e.Attempts == 1 && owner == ""
	})
	h.clock.Advance(2 * time.Minute) // the retry is due now
	deadline := time.Now().Add(15 * cfg.Poll)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := attempts >= 2
		mu.Unlock()
		if done {
			return
		}
		// Steady traffic: one message every ~50 ms, each handed over fresh.
		id := h.submit("<s@example.com>", "r@example.net")
		eventually(t, "the fresh message delivered", func() bool { return h.env(id).State == store.StateDelivered })
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("a due retry was not claimed in %v (%d× Poll) of steady fresh traffic", 15*cfg.Poll, 15)
}

// gatedStore holds every Enqueue until its gate opens.
type gatedStore struct {
	*fakeStore
	gate    chan struct{}
	entered chan struct{}
}

func (g *gatedStore) Enqueue(ctx context.Context, msgs ...*store.NewMessage) error {
	close(g.entered)
	<-g.gate
	return g.fakeStore.Enqueue(ctx, msgs...)
}

// Review finding: a stop past its deadline returns while a message being
// handed over is still in its Enqueue; once stored (leased to this
// instance), it is put in the backlog of the stopped queue and never given
// back: its lease outlives the relay on a message it never tried.
func TestReviewUncleanStopLeavesHandedOverMessageLeased(t *testing.T) {
	h := newHarness(t, testConfig())
	gs := &gatedStore{fakeStore: h.st, gate: make(chan struct{}), entered: make(chan struct{})}
	q, err := New(gs, h.routes.resolve, h.notes.notify, testConfig(), h.logs.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	q.now = h.clock.Now
	q.Start(context.Background())
	id := transport.NewID()
	stored := make(chan error, 1)
	go func() {
		d, _ := q.Transport().Begin(context.Background(), transport.Envelope{ID: id, Account: acct, From: "<s@example.com>"})
		_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
		_, err := d.Body(context.Background(), stringMessage("Subject: x\r\n\r\nx\r\n"))
		stored <- err
	}()
	<-gs.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the stop deadline has passed
	if err := q.Stop(ctx); err == nil {
		t.Fatal("Stop past its deadline returned no error")
	}
	close(gs.gate)
	if err := <-stored; err != nil {
		t.Fatalf("Body: %v", err)
	}
	eventually(t, "the handover finished", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.fresh == 0
	})
	if owner, until := h.st.lease(id); owner != "" {
		t.Errorf("after the stop, the never-tried message is leased to %q until %v", owner, until)
	}
}

// lateAnswerStore commits an Enqueue at once but answers it only when its
// gate opens (a writer that stalled past the lease, then answered).
type lateAnswerStore struct {
	*fakeStore
	gate      chan struct{}
	committed chan struct{}
}

func (g *lateAnswerStore) Enqueue(ctx context.Context, msgs ...*store.NewMessage) error {
	err := g.fakeStore.Enqueue(ctx, msgs...)
	close(g.committed)
	<-g.gate
	return err
}

// Review finding: fresh.start ignores takeHeld's answer. When the handed
// over message's lease (counted from before the enqueue) has run out by
// the time the enqueue is answered, a claim can take the message first;
// start then places it a second time and it is delivered twice by one
// live instance.
func TestReviewHandoverAfterExpiredLeaseDeliversTwice(t *testing.T) {
	h := newHarness(t, testConfig())
	ls := &lateAnswerStore{fakeStore: h.st, gate: make(chan struct{}), committed: make(chan struct{})}
	q, err := New(ls, h.routes.resolve, h.notes.notify, testConfig(), h.logs.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	q.now = h.clock.Now
	h.q = q
	h.start(q)
	id := transport.NewID()
	stored := make(chan error, 1)
	go func() {
		d, _ := q.Transport().Begin(context.Background(), transport.Envelope{ID: id, Account: acct, From: "<s@example.com>"})
		_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
		_, err := d.Body(context.Background(), stringMessage("Subject: x\r\n\r\nx\r\n"))
		stored <- err
	}()
	<-ls.committed
	h.clock.Advance(DefaultLease + time.Second) // the writer stalled past the lease
	q.Kick()
	eventually(t, "the claim delivered it", func() bool { _, _, out := h.tr.snapshot(); return len(out) == 1 })
	close(ls.gate)
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	eventually(t, "workers idle", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.running == 0 && q.fresh == 0
	})
	if _, _, out := h.tr.snapshot(); len(out) != 1 {
		t.Errorf("the message went out %d times from one live instance", len(out))
	}
}
