package limits

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reserve is Reserve that fails the test on a refusal.
func reserve(t *testing.T, a *AccountLimits, now time.Time, rcpts int) Reservation {
	t.Helper()
	r, err := a.Reserve(now)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	for i := 0; i < rcpts; i++ {
		if err := r.AddRcpt(now); err != nil {
			t.Fatalf("AddRcpt %d: %v", i+1, err)
		}
	}
	return r
}

func TestRollingDailyCounts(t *testing.T) {
	a := NewAccountLimits(0, 0, 3, 5, 0)
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		reserve(t, a, start, 1).Commit()
	}
	_, err := a.Reserve(start)
	le, ok := IsLimit(err)
	if !ok || le.Kind != KindDailyMessages {
		t.Fatalf("4th message of the day: %v", err)
	}
	if want := start.Add(24 * time.Hour); !le.RetryAt.Equal(want) {
		t.Errorf("RetryAt = %v, want %v (when the first quarter-hour leaves the window)", le.RetryAt, want)
	}
	// 24 hours later the window has rolled past them.
	later := start.Add(24*time.Hour + 15*time.Minute)
	if u := a.Usage(later)[KindDailyMessages]; u != 0 {
		t.Errorf("usage next day = %v", u)
	}
	r := reserve(t, a, later, 5)
	if err := r.AddRcpt(later); err == nil {
		t.Error("6th recipient of the day admitted")
	}
	r.Commit()
}

func TestDailyRecipients(t *testing.T) {
	a := NewAccountLimits(0, 0, 0, 5, 0)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	reserve(t, a, now, 3).Commit()
	r := reserve(t, a, now, 2)
	err := r.AddRcpt(now)
	if le, ok := IsLimit(err); !ok || le.Kind != KindDailyRcpts {
		t.Fatalf("recipients over the daily limit: %v", err)
	}
	r.Cancel(now)
	reserve(t, a, now, 2).Commit() // the cancelled two came back
}

func TestRecipientsPerMessage(t *testing.T) {
	a := NewAccountLimits(0, 0, 0, 0, 2)
	now := time.Now()
	r := reserve(t, a, now, 2)
	err := r.AddRcpt(now)
	if le, ok := IsLimit(err); !ok || le.Kind != KindMessageRcpts || !le.RetryAt.IsZero() {
		t.Fatalf("3rd recipient: %v (no wait can help, so no RetryAt)", err)
	}
}

func TestRatePerMinute(t *testing.T) {
	a := NewAccountLimits(30, 0, 0, 0, 0)
	now := time.Now()
	for i := 0; i < 30; i++ {
		reserve(t, a, now, 0).Commit()
	}
	_, err := a.Reserve(now)
	le, ok := IsLimit(err)
	if !ok || le.Kind != KindRate {
		t.Fatalf("31st message: %v", err)
	}
	if d := le.RetryAt.Sub(now); d <= 0 || d > 2*time.Second {
		t.Errorf("RetryAt %v after now, want the next token (2s at 30/min)", d)
	}
	// A refused reservation took nothing: the next token is still 2s away.
	reserve(t, a, now.Add(2*time.Second), 0).Commit()
}

// A message that was not sent gives its share back: the rate token and
// the daily counts.
func TestCancelReturnsTheShare(t *testing.T) {
	a := NewAccountLimits(1, 1, 1, 1, 0)
	now := time.Now()
	r := reserve(t, a, now, 1)
	if _, err := a.Reserve(now); err == nil {
		t.Fatal("second message admitted over rate 1/min and 1/day")
	}
	r.Cancel(now)
	r.Cancel(now) // idempotent
	r2 := reserve(t, a, now, 1)
	r2.Commit()
	r2.Cancel(now) // after Commit: no effect
	if _, err := a.Reserve(now); err == nil {
		t.Error("Cancel after Commit gave the share back")
	}
}

// Concurrent sessions cannot overshoot a daily quota together: each
// reservation counts the moment it is made.
func TestConcurrentReservationsNeverOvershoot(t *testing.T) {
	const quota = 50
	a := NewAccountLimits(0, 0, quota, 0, 0)
	now := time.Now()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := a.Reserve(now)
			if err != nil {
				return
			}
			admitted.Add(1)
			r.Commit()
		}()
	}
	close(start)
	wg.Wait()
	if got := admitted.Load(); got != quota {
		t.Errorf("admitted %d messages against a quota of %d", got, quota)
	}
}

func TestNoLimitsNoObject(t *testing.T) {
	if NewAccountLimits(0, 0, 0, 0, 0) != nil {
		t.Error("an account without limits should have none to check")
	}
	var a *AccountLimits
	var l Limiter = a
	r, err := l.Reserve(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := r.AddRcpt(time.Now()); err != nil {
			t.Fatal("nil limits refuse")
		}
	}
	r.Cancel(time.Now())
}

// A recipient the provider refused gives its share of the daily quota
// back, while the message's other recipients keep theirs.
func TestDroppedRecipientCostsNoQuota(t *testing.T) {
	a := NewAccountLimits(0, 0, 0, 2, 0)
	now := time.Now()
	r := reserve(t, a, now, 2)
	r.DropRcpt()
	r.Commit()
	r2 := reserve(t, a, now, 1) // 1 kept + 1 = the quota of 2
	if err := r2.AddRcpt(now); err == nil {
		t.Error("the quota was exceeded: the dropped recipient's share came back twice")
	}
}
