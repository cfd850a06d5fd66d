package queue

import (
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

func TestUnrecordedAttemptIsRetriedAfterTheLease(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	id := h.submit("<s@example.com>", "r@example.net")
	h.st.finishErr = func(string) error { return store.ErrUnavailable }
	h.step()
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "finish"); got != 1 {
		t.Errorf("store_errors_total{finish} = %v, want 1", got)
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
	// At least once: after the lease, the message goes again.
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
	if env, _, _ := h.st.msg(first); env.State != store.StateBounced {
		t.Errorf("the original is %s; its attempt is recorded anyway", env.State)
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
