package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// gate holds Body calls until the test lets them go, one by one.
type gate chan struct{}

func (g gate) body(ctx context.Context, _ transport.Envelope, _ []string) (transport.Result, error) {
	select {
	case <-g:
		return transport.Result{Reply: "250 2.0.0 OK"}, nil
	case <-ctx.Done():
		return transport.Result{}, &transport.Error{Kind: transport.KindLost, Err: ctx.Err()}
	}
}

// deliverAll lets n gated deliveries go one at a time, each time once
// min(limit, left) of them are running, and fails as soon as more than
// limit ran at once.
func deliverAll(t *testing.T, tr *fakeTransport, g gate, n, limit int) {
	t.Helper()
	for left := n; left > 0; left-- {
		want := min(limit, left)
		eventually(t, fmt.Sprintf("%d deliveries in flight", want), func() bool {
			if _, most, _ := tr.snapshot(); most > limit {
				t.Fatalf("%d deliveries ran at once; the limit is %d", most, limit)
			}
			return tr.inFlight() == want
		})
		g <- struct{}{}
	}
}

func TestAccountConcurrencyCap(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 10
	h := newHarness(t, cfg)
	h.routes.set(acct, h.tr, 3)
	g := make(gate)
	h.tr.body = g.body
	var ids []string
	for i := 0; i < 100; i++ {
		ids = append(ids, h.submit("<s@example.com>", "r@example.net"))
		h.clock.Advance(time.Millisecond)
	}
	h.start(h.q)
	deliverAll(t, h.tr, g, 100, 3)
	for _, id := range ids {
		eventually(t, "every message delivered", func() bool {
			env, _, _ := h.st.msg(id)
			return env.State == store.StateDelivered
		})
	}
	eventually(t, "every route released", func() bool { return h.routes.outstanding() == 0 })
}

func TestWorkersCap(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 4
	h := newHarness(t, cfg)
	g := make(gate)
	h.tr.body = g.body
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("acct%d@example.com", i)
		h.routes.set(name, h.tr, 0)
		d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: transport.NewID(), Account: name, From: "<s@example.com>"})
		_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
		if _, err := d.Body(context.Background(), stringMessage("Subject: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	h.start(h.q)
	deliverAll(t, h.tr, g, 20, 4)
	eventually(t, "deliveries_in_flight back to 0", func() bool { return h.metric("oauthrelay_queue_deliveries_in_flight") == 0 })
}

func TestStopWaitsForDeliveriesInFlight(t *testing.T) {
	h := newHarness(t, testConfig())
	g := make(gate)
	h.tr.body = g.body
	id := h.submit("<s@example.com>", "r@example.net")
	h.q.Start(context.Background())
	eventually(t, "the delivery in flight", func() bool { return h.tr.inFlight() == 1 })

	stopped := make(chan error, 1)
	go func() { stopped <- h.q.Stop(context.Background()) }()
	eventually(t, "the scheduler stopped", func() bool {
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		return h.q.stopping
	})
	<-h.q.schedDone
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a delivery was in flight", err)
	default:
	}
	g <- struct{}{}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if env, _, _ := h.st.msg(id); env.State != store.StateDelivered {
		t.Errorf("state after Stop = %s; the finished delivery must be recorded", env.State)
	}
	// Nothing is claimed after Stop.
	h.submit("<s@example.com>", "r@example.net")
	h.q.Kick()
	if begins, _, _ := h.tr.snapshot(); begins != 1 {
		t.Errorf("a delivery began after Stop")
	}
}

func TestStopAbandonsAtItsDeadlineAndRestartResumes(t *testing.T) {
	h := newHarness(t, testConfig())
	g := make(gate)
	cancelled := make(chan struct{})
	h.tr.body = func(ctx context.Context, env transport.Envelope, rcpts []string) (transport.Result, error) {
		res, err := g.body(ctx, env, rcpts)
		if ctx.Err() != nil {
			close(cancelled)
		}
		return res, err
	}
	id := h.submit("<s@example.com>", "r@example.net")
	h.q.Start(context.Background())
	eventually(t, "the delivery in flight", func() bool { return h.tr.inFlight() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- h.q.Stop(ctx) }()
	cancel() // the shutdown deadline
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want the context's error", err)
	}
	<-cancelled
	h.q.workers.Wait()
	if n := h.st.count(h.st.finishes, id); n != 0 {
		t.Fatalf("an abandoned delivery was recorded (%d Finish calls)", n)
	}
	if owner, _ := h.st.lease(id); owner != "instance-a" {
		t.Fatalf("lease owner after abandonment = %q; the lease stays until it expires or is released", owner)
	}
	if !containsAll(h.logs.String(), "abandoning deliveries in flight", "delivery abandoned at shutdown") {
		t.Error("the abandonment was not logged")
	}

	// A restart of the same instance takes the message back at once.
	tr2 := &fakeTransport{}
	h.routes.set(acct, tr2, 0)
	q2 := h.newQueue(testConfig(), nil)
	h.start(q2)
	eventually(t, "the message delivered after the restart", func() bool {
		env, _, _ := h.st.msg(id)
		return env.State == store.StateDelivered
	})
	if env, _, _ := h.st.msg(id); env.Attempts != 1 {
		t.Errorf("attempts = %d; the abandoned one does not count", env.Attempts)
	}
}

func TestLeaseIsRenewedDuringASlowDelivery(t *testing.T) {
	cfg := testConfig()
	cfg.Lease = 30 * time.Millisecond
	h := newHarness(t, cfg)
	id := h.submit("<s@example.com>", "r@example.net")
	rivalClaims := 0
	h.tr.body = func(ctx context.Context, _ transport.Envelope, _ []string) (transport.Result, error) {
		// Time passes well beyond the lease; each time a renewal comes,
		// another instance still cannot take the message.
		for i := 0; i < 6; i++ {
			before := h.st.count(h.st.extends, id)
			h.clock.Advance(cfg.Lease / 2)
			eventually(t, "a lease renewal", func() bool { return h.st.count(h.st.extends, id) > before })
			got, err := h.st.Claim(ctx, "instance-b", h.clock.Now(), 10, time.Minute, nil)
			if err != nil {
				return transport.Result{}, err
			}
			rivalClaims += len(got)
		}
		return transport.Result{Reply: "250 2.0.0 OK"}, nil
	}
	h.start(h.q)
	eventually(t, "the slow message delivered", func() bool {
		env, _, _ := h.st.msg(id)
		return env.State == store.StateDelivered
	})
	if rivalClaims != 0 {
		t.Errorf("another instance claimed the message during its delivery %d times", rivalClaims)
	}
}

func TestLostLeaseAbandonsTheDelivery(t *testing.T) {
	cfg := testConfig()
	cfg.Lease = 30 * time.Millisecond
	h := newHarness(t, cfg)
	id := h.submit("<s@example.com>", "r@example.net")
	g := make(gate)
	h.tr.body = g.body
	h.start(h.q)
	eventually(t, "the delivery in flight", func() bool { return h.tr.inFlight() == 1 })
	// Another instance takes the message over (as after a long pause).
	h.clock.Advance(time.Hour)
	if got, err := h.st.Claim(context.Background(), "instance-b", h.clock.Now(), 1, time.Hour, nil); err != nil || len(got) != 1 {
		t.Fatalf("takeover claim = %d, %v", len(got), err)
	}
	eventually(t, "the delivery cancelled", func() bool { return h.tr.inFlight() == 0 })
	eventually(t, "the loss logged", func() bool {
		return containsAll(h.logs.String(), "lease on a queued message lost", "attempt not recorded")
	})
	if n := h.st.count(h.st.finishes, id); n != 0 {
		t.Errorf("%d Finish calls for a message whose lease was lost", n)
	}
}

func TestMetricsFromStats(t *testing.T) {
	h := newHarness(t, testConfig())
	g := make(gate)
	h.tr.body = g.body
	h.submit("<s@example.com>", "r@example.net")
	held := h.submit("<s@example.com>", "r@example.net")
	if err := h.st.Hold(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(90 * time.Second)
	h.start(h.q)
	eventually(t, "depth and age metrics", func() bool {
		return h.metric("oauthrelay_queue_depth", "state", "queued", "account", acct) == 1 &&
			h.metric("oauthrelay_queue_depth", "state", "held", "account", acct) == 1 &&
			h.metric("oauthrelay_queue_oldest_age_seconds") == 90 &&
			h.metric("oauthrelay_queue_deliveries_in_flight") == 1
	})
	g <- struct{}{}
	eventually(t, "depth after the delivery", func() bool {
		return h.metric("oauthrelay_queue_depth", "state", "queued", "account", acct) == 0 &&
			h.metric("oauthrelay_queue_oldest_age_seconds") == 0
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
