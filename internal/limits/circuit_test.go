package limits

import (
	"fmt"
	"testing"
	"time"
)

func TestAccountCircuitOpensAfterConsecutiveFailures(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := NewCircuit(CircuitSettings{Name: "account:a", ConsecutiveFailures: 2, OpenTimeout: 30 * time.Second})
	c.Record(now, "", Failure)
	c.Record(now, "", Success) // a success in between resets the run
	c.Record(now, "", MemberFailure)
	if got := c.stateAt(now); got != StateClosed {
		t.Fatalf("after failure, success, failure: %s", got)
	}
	c.Record(now, "", Failure)
	if _, err := c.Allow(now); err != ErrCircuitOpen {
		t.Fatalf("after 2 failures in a row: %v", err)
	}
	later := now.Add(31 * time.Second)
	release, err := c.Allow(later)
	if err != nil || c.stateAt(later) != StateHalfOpen {
		t.Fatalf("half-open probe: %v %s", err, c.stateAt(later))
	}
	if _, err := c.Allow(later); err == nil {
		t.Fatal("a second concurrent probe was admitted")
	}
	release() // the probe's first step is done: the slot is free again
	if r2, err := c.Allow(later); err != nil {
		t.Fatalf("probe slot not released: %v", err)
	} else {
		r2()
	}
	c.Record(later, "", Success)
	if got := c.stateAt(later); got != StateClosed {
		t.Errorf("after a good probe: %s", got)
	}
}

// TestProbeSlotExpires: an attempt that never reports back (a client idling
// after MAIL) cannot hold a half-open circuit.
func TestProbeSlotExpires(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := NewCircuit(CircuitSettings{ConsecutiveFailures: 1, OpenTimeout: time.Second})
	c.Record(now, "", Failure)
	now = now.Add(2 * time.Second)
	if _, err := c.Allow(now); err != nil { // taken, never released
		t.Fatal(err)
	}
	if _, err := c.Allow(now.Add(time.Second)); err == nil {
		t.Fatal("second probe admitted while the first is under way")
	}
	if _, err := c.Allow(now.Add(probeTimeout + time.Second)); err != nil {
		t.Fatalf("the stuck probe still holds the circuit: %v", err)
	}
}

func TestProviderCircuit(t *testing.T) {
	settings := CircuitSettings{Name: "provider:p", Window: time.Minute, MinRequests: 10, FailureRatio: 0.5, OpenTimeout: 30 * time.Second}
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name   string
		events func(c *Circuit, now time.Time)
		open   bool
	}{
		{"one throttled mailbox among healthy ones", func(c *Circuit, now time.Time) {
			for i := 0; i < 100; i++ {
				c.Record(now, "throttled@x", MemberFailure)
				c.Record(now, fmt.Sprintf("ok%d@x", i%3), Success)
			}
		}, false},
		{"one throttled mailbox alone", func(c *Circuit, now time.Time) {
			for i := 0; i < 100; i++ {
				c.Record(now, "throttled@x", MemberFailure)
			}
		}, false},
		{"most mailboxes failing", func(c *Circuit, now time.Time) {
			for i := 0; i < 12; i++ {
				c.Record(now, fmt.Sprintf("m%d@x", i%4), MemberFailure)
			}
			c.Record(now, "m4@x", Success)
		}, true},
		{"connections failing", func(c *Circuit, now time.Time) {
			for i := 0; i < 10; i++ {
				c.Record(now, fmt.Sprintf("m%d@x", i%5), Failure)
			}
		}, true},
		{"below the minimum volume", func(c *Circuit, now time.Time) {
			for i := 0; i < 9; i++ {
				c.Record(now, fmt.Sprintf("m%d@x", i), Failure)
			}
		}, false},
		{"failures spread beyond the window", func(c *Circuit, now time.Time) {
			for i := 0; i < 20; i++ {
				at := now.Add(time.Duration(i) * 20 * time.Second)
				c.Record(at, "a@x", Failure)
				for j := 0; j < 3; j++ {
					c.Record(at, "b@x", Success)
				}
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCircuit(settings)
			tc.events(c, start)
			_, err := c.Allow(start.Add(time.Hour / 2).Add(-30 * time.Minute))
			if got := err == ErrCircuitOpen; got != tc.open {
				t.Errorf("open = %v, want %v (state %s)", got, tc.open, c.stateAt(start))
			}
		})
	}
}

func (c *Circuit) stateAt(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(now)
	return c.state
}

func TestCircuitRetryAt(t *testing.T) {
	now := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	c := NewCircuit(CircuitSettings{OpenTimeout: 30 * time.Second, ConsecutiveFailures: 1})
	if got := c.RetryAt(now); !got.Equal(now) {
		t.Errorf("closed: RetryAt = %v, want now", got)
	}
	c.Record(now, "a", Failure)
	if got := c.RetryAt(now); !got.Equal(now.Add(30 * time.Second)) {
		t.Errorf("open: RetryAt = %v, want the end of the open period", got)
	}
	later := now.Add(30 * time.Second)
	if _, err := c.Allow(later); err != nil { // takes the half-open probe
		t.Fatal(err)
	}
	if got := c.RetryAt(later); !got.Equal(later.Add(probeRecheck)) {
		t.Errorf("probe under way: RetryAt = %v, want a recheck in %v (not the probe's whole timeout)", got, probeRecheck)
	}
}

// AllowAll takes a slot of each circuit, or none when one refuses, and
// names the one that refused.
func TestAllowAll(t *testing.T) {
	now := time.Now()
	open := NewCircuit(CircuitSettings{Name: "provider", ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	release, err := open.Allow(now)
	if err != nil {
		t.Fatal(err)
	}
	open.Record(now, "", Failure)
	release()
	closed := NewCircuit(CircuitSettings{Name: "account", ConsecutiveFailures: 1, OpenTimeout: time.Hour})

	rel, refused, err := AllowAll(now, nil, closed)
	if err != nil || refused != nil {
		t.Fatalf("AllowAll(nil, closed) = %v, %v", refused, err)
	}
	rel()
	if _, refused, err := AllowAll(now, open, closed); err == nil || refused != open {
		t.Fatalf("AllowAll(open, closed) refused %v (%v), want the open one", refused, err)
	}
	if _, refused, err := AllowAll(now, closed, open); err == nil || refused != open {
		t.Fatalf("AllowAll(closed, open) refused %v (%v), want the open one", refused, err)
	}
}
