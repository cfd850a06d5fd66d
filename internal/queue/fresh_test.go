package queue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// A new message with a worker free is stored leased to this instance and
// delivered from memory: the store never claims it nor reads its body.
func TestFreshMessageIsHandedOver(t *testing.T) {
	h := newHarness(t, testConfig())
	h.start(h.q)
	_, reads0 := h.st.counters()
	data := "Subject: fresh\r\n\r\nfrom memory\r\n"
	id := h.submitMessage("<s@example.com>", data, "a@example.net")
	if owner := h.st.enqueuedLease(id); owner != "instance-a" {
		t.Fatalf("enqueued with lease owner %q, want this instance's", owner)
	}
	eventually(t, "the message delivered", func() bool { return h.env(id).State == store.StateDelivered })
	if _, _, out := h.tr.snapshot(); len(out) != 1 || out[0].data != data {
		t.Fatalf("transport got %+v, want the message once", out)
	}
	if _, reads := h.st.counters(); reads != reads0 {
		t.Errorf("the body was read from the store %d times", reads-reads0)
	}
	if got := h.metric("oauthrelay_queue_handed_over_total"); got != 1 {
		t.Errorf("handed_over_total = %v, want 1", got)
	}
	eventually(t, "its buffer returned and no longer held", func() bool {
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		return len(h.q.held) == 0 && h.q.fresh == 0 && h.q.running == 0
	})
}

// Messages are handed over only while workers are free; the others wait
// in the store, unleased, and are claimed and delivered once a worker is.
func TestFreshHandoverOnlyToFreeWorkers(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 2
	h := newHarness(t, cfg)
	gate := make(chan struct{})
	h.tr.body = func(ctx context.Context, _ transport.Envelope, _ []string) (transport.Result, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return transport.Result{}, ctx.Err()
		}
		return transport.Result{Reply: "250 2.0.0 OK fake"}, nil
	}
	h.start(h.q)
	var ids []string
	for i := range 4 {
		ids = append(ids, h.submitMessage("<s@example.com>", "Subject: "+string(rune('a'+i))+"\r\n\r\nx\r\n", "r@example.net"))
		if i < 2 {
			eventually(t, "the delivery under way", func() bool { return h.tr.inFlight() == i+1 })
		}
	}
	for i, id := range ids {
		want := ""
		if i < 2 {
			want = "instance-a"
		}
		if got := h.st.enqueuedLease(id); got != want {
			t.Errorf("message %d enqueued with lease owner %q, want %q", i, got, want)
		}
	}
	close(gate)
	for _, id := range ids {
		eventually(t, "every message delivered", func() bool { return h.env(id).State == store.StateDelivered })
	}
	if _, _, out := h.tr.snapshot(); len(out) != 4 {
		t.Errorf("transport got %d messages, want 4", len(out))
	}
}

// A message larger than freshMax is not held in memory: it waits for a
// claim and is read from the store.
func TestLargeMessageIsNotHandedOver(t *testing.T) {
	h := newHarness(t, testConfig())
	h.start(h.q)
	data := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", freshMax/18+1)
	id := h.submitMessage("<s@example.com>", data, "r@example.net")
	if owner := h.st.enqueuedLease(id); owner != "" {
		t.Fatalf("a %d-byte message was enqueued leased to %q", len(data), owner)
	}
	eventually(t, "the message delivered", func() bool { return h.env(id).State == store.StateDelivered })
	if _, reads := h.st.counters(); reads == 0 {
		t.Error("the large message was not read from the store")
	}
	if _, _, out := h.tr.snapshot(); len(out) != 1 || out[0].data != data {
		t.Errorf("the large message was not delivered intact")
	}
}

// A message the store refuses gives its reserved worker slot back: the
// next message is handed over again.
func TestFreshSlotReturnedWhenTheStoreRefuses(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	h := newHarness(t, cfg)
	h.start(h.q)
	refuse := true
	h.st.enqueueErr = func(*store.NewMessage) error {
		if refuse {
			return errors.New("disk full")
		}
		return nil
	}
	d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: transport.NewID(), Account: acct, From: "<s@example.com>"})
	_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	if _, err := d.Body(context.Background(), stringMessage("Subject: x\r\n\r\nx\r\n")); err == nil {
		t.Fatal("the store refused, but Body succeeded")
	}
	h.st.mu.Lock()
	refuse = false
	h.st.mu.Unlock()
	id := h.submit("<s@example.com>", "r@example.net")
	if owner := h.st.enqueuedLease(id); owner != "instance-a" {
		t.Fatalf("after a refused message, the next was enqueued with lease owner %q: its slot was not returned", owner)
	}
	eventually(t, "the message delivered", func() bool { return h.env(id).State == store.StateDelivered })
}

// While its account is postponed (a limit, an open circuit), a new
// message is not handed over: it waits in the store for the account.
func TestFreshHandoverWaitsForAPostponedAccount(t *testing.T) {
	h := newHarness(t, testConfig())
	h.start(h.q)
	h.q.mu.Lock()
	h.q.accountLocked(acct).until = t0.Add(time.Hour)
	h.q.mu.Unlock()
	id := h.submit("<s@example.com>", "r@example.net")
	if owner := h.st.enqueuedLease(id); owner != "" {
		t.Fatalf("a message of a postponed account was enqueued leased to %q", owner)
	}
	if begins, _, _ := h.tr.snapshot(); begins != 0 {
		t.Errorf("%d deliveries began for a postponed account", begins)
	}
}

// A finished delivery wakes the scheduler, but with nothing left unclaimed
// in the store it costs the store no claim: messages handed over fresh
// are delivered with no claim at all after the first, empty one.
func TestFinishedDeliveriesCostNoEmptyClaims(t *testing.T) {
	h := newHarness(t, testConfig())
	h.start(h.q)
	eventually(t, "the start-up claim", func() bool { claims, _ := h.st.counters(); return claims > 0 })
	claims0, _ := h.st.counters()
	for range 20 {
		id := h.submit("<s@example.com>", "r@example.net")
		eventually(t, "the message delivered", func() bool { return h.env(id).State == store.StateDelivered })
	}
	eventually(t, "the workers idle", func() bool {
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		return h.q.running == 0
	})
	if claims, _ := h.st.counters(); claims != claims0 {
		t.Errorf("%d claims for 20 messages handed over fresh, want none", claims-claims0)
	}
}

// A stop past its deadline abandons the deliveries in flight, which keep
// their leases (they may have reached the provider), but gives each
// message that was waiting for a worker back at once: no lease outlives
// the relay on a message it never tried.
func TestUncleanStopGivesBackTheWaitingMessages(t *testing.T) {
	h := newHarness(t, testConfig())
	h.routes.set(acct, h.tr, 1) // one delivery at a time: the others wait
	h.claimOnly()
	g := make(gate)
	h.tr.body = g.body
	var ids []string
	for range 3 {
		ids = append(ids, h.submit("<s@example.com>", "r@example.net"))
	}
	h.q.Start(context.Background())
	eventually(t, "one delivery stuck and two waiting", func() bool {
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		return h.tr.inFlight() == 1 && len(h.q.backlog) == 2
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the stop deadline has passed
	if err := h.q.Stop(ctx); err == nil {
		t.Fatal("Stop past its deadline returned no error")
	}
	leased := 0
	for _, id := range ids {
		if owner, _ := h.st.lease(id); owner != "" {
			leased++
		}
	}
	if leased != 1 {
		t.Errorf("%d messages leased after the stop, want 1 (the abandoned delivery)", leased)
	}
}
