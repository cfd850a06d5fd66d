package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func TestConfigValidate(t *testing.T) {
	ok := testConfig()
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"zero workers, lease and poll take defaults", func(c *Config) { c.Workers, c.Lease, c.Poll = 0, 0, 0 }, ""},
		{"no owner", func(c *Config) { c.Owner = "" }, "Owner"},
		{"no schedule", func(c *Config) { c.RetrySchedule = nil }, "retry schedule is empty"},
		{"zero step", func(c *Config) { c.RetrySchedule = []time.Duration{time.Minute, 0} }, "step 2"},
		{"no lifetime", func(c *Config) { c.MaxLifetime = 0 }, "max_lifetime"},
		{"negative workers", func(c *Config) { c.Workers = -1 }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error about %q", err, tt.want)
			}
		})
	}
	d := Config{Owner: "x", RetrySchedule: []time.Duration{time.Minute}, MaxLifetime: time.Hour}.withDefaults()
	if d.Workers != DefaultWorkers || d.Lease != DefaultLease || d.Poll != DefaultPoll {
		t.Errorf("defaults = %+v", d)
	}
}

func TestClaimFailuresAreLoggedOnceAndRecover(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	id := h.submit("<s@example.com>", "r@example.net")
	failing := true
	h.st.claimErr = func() error {
		if failing {
			return fmt.Errorf("database locked: %w", store.ErrUnavailable)
		}
		return nil
	}
	h.step()
	h.step()
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "claim"); got != 2 {
		t.Errorf("store_errors_total{claim} = %v, want 2", got)
	}
	if n := strings.Count(h.logs.String(), "cannot claim queued messages"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
	h.st.mu.Lock()
	failing = false
	h.st.mu.Unlock()
	h.step()
	if env, _, _ := h.st.msg(id); env.State != store.StateDelivered {
		t.Errorf("state after the store recovered = %s", env.State)
	}
	if !strings.Contains(h.logs.String(), "claiming queued messages works again") {
		t.Error("the recovery was not logged")
	}
}

// A store that fails for a moment after the provider accepted the
// message must not make it go out twice: Finish is retried while the
// lease is renewed.
func TestTransientFinishFailureIsRetried(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	id := h.submit("<s@example.com>", "r@example.net")
	fails := 1
	h.st.finishErr = func(string) error {
		if fails > 0 {
			fails--
			return fmt.Errorf("database is locked: %w", store.ErrUnavailable)
		}
		return nil
	}
	h.step()
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "finish"); got != 1 {
		t.Errorf("store_errors_total{finish} = %v, want 1", got)
	}
	if env, _, _ := h.st.msg(id); env.State != store.StateDelivered {
		t.Errorf("state = %s, want delivered", env.State)
	}
	h.clock.Advance(DefaultLease)
	h.step()
	if _, _, out := h.tr.snapshot(); len(out) != 1 {
		t.Errorf("%d deliveries after one transient store error, want 1", len(out))
	}
}

// A store that stays down for longer: the attempt is not recorded, and
// after the lease the message goes again (at least once).
func TestUnrecordedAttemptIsRetriedAfterTheLease(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	id := h.submit("<s@example.com>", "r@example.net")
	h.st.finishErr = func(string) error { return store.ErrUnavailable }
	h.step()
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "finish"); got != maxFinishTries {
		t.Errorf("store_errors_total{finish} = %v, want %d (every try)", got, maxFinishTries)
	}
	if owner, _ := h.st.lease(id); owner != "instance-a" {
		t.Fatalf("lease after a failed Finish = %q", owner)
	}
	h.st.mu.Lock()
	h.st.finishErr = nil
	h.st.mu.Unlock()
	h.step()
	if begins, _, _ := h.tr.snapshot(); begins != 1 {
		t.Fatal("the message was tried again while its lease was live")
	}
	h.clock.Advance(DefaultLease)
	h.step()
	if env, _, _ := h.st.msg(id); env.State != store.StateDelivered {
		t.Errorf("state = %s", env.State)
	}
	if _, _, out := h.tr.snapshot(); len(out) != 2 {
		t.Errorf("%d deliveries, want 2 (the documented duplicate)", len(out))
	}
}

func TestNotificationStoreFailureDoesNotUseTheRate(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBouncesPerHour = 1
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error { return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user") }
	failNotices := true
	h.st.enqueueErr = func(m *store.NewMessage) error {
		if m.Bounce && failNotices {
			return errors.New("disk full")
		}
		return nil
	}
	first := h.submit("<s@example.com>", "x@example.net")
	h.step()
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "enqueue_notice"); got != 1 {
		t.Errorf("store_errors_total{enqueue_notice} = %v, want 1", got)
	}
	// The sender must still hear of it: the failure is kept, the
	// original stays queued (with its body) for another try.
	env, _, _ := h.st.msg(first)
	if env.State != store.StateQueued || rcptOf(env, "x@example.net").State != store.RcptPending {
		t.Errorf("the original is %s with recipient %+v; want it kept queued until its notice is stored", env.State, rcptOf(env, "x@example.net"))
	}
	h.st.mu.Lock()
	failNotices = false
	h.st.mu.Unlock()
	h.submit("<s@example.com>", "x@example.net")
	h.step()
	if got := len(h.st.bounces()); got != 1 {
		t.Errorf("%d notifications; a notice that was not stored must not count against the cap", got)
	}
}

// A lease that ran out while its renewals failed is claimed again by the
// same instance: the message is still being delivered here, so the claim
// is dropped instead of starting a second delivery.
func TestExpiredLeaseIsNotReclaimedWhileStillDelivering(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	h.tr.body = func(ctx context.Context, _ transport.Envelope, _ []string) (transport.Result, error) {
		entered <- struct{}{}
		<-release
		return transport.Result{Reply: "250 2.0.0 OK"}, nil
	}
	h.submit("<s@example.com>", "r@example.net")
	h.q.dispatch(context.Background())
	<-entered
	h.clock.Advance(DefaultLease + time.Second) // no renewal got through
	h.q.dispatch(context.Background())
	h.q.mu.Lock()
	running := h.q.running
	h.q.mu.Unlock()
	close(release)
	h.q.workers.Wait()
	if running != 1 {
		t.Errorf("%d deliveries of one message in flight at once in one instance; want 1", running)
	}
	if _, _, out := h.tr.snapshot(); len(out) != 1 {
		t.Errorf("%d deliveries, want 1", len(out))
	}
}
