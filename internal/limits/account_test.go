package limits

import (
	"testing"
	"time"
)

func TestRollingDailyCounts(t *testing.T) {
	a := NewAccountLimits(0, 0, 3, 5, 0)
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		if err := a.AllowMessage(start); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		a.Record(1, start)
	}
	if err := a.AllowMessage(start); err == nil {
		t.Fatal("4th message of the day admitted")
	}
	if err := a.AllowRecipient(3, start); err == nil { // 3 used + 3 > 5
		t.Error("recipients over the daily limit admitted")
	}
	if err := a.AllowRecipient(2, start); err != nil {
		t.Errorf("recipients within the limit refused: %v", err)
	}
	// 24 hours later the window has rolled past them.
	later := start.Add(24*time.Hour + 15*time.Minute)
	if err := a.AllowMessage(later); err != nil {
		t.Errorf("next day: %v", err)
	}
	if u := a.Usage(later)[KindDailyMessages]; u != 0 {
		t.Errorf("usage next day = %v", u)
	}
}

func TestRatePerMinute(t *testing.T) {
	a := NewAccountLimits(30, 0, 0, 0, 0)
	now := time.Now()
	for i := 0; i < 30; i++ {
		if err := a.AllowMessage(now); err != nil {
			t.Fatalf("message %d of the burst: %v", i, err)
		}
	}
	err := a.AllowMessage(now)
	if le, ok := IsLimit(err); !ok || le.Kind != KindRate {
		t.Fatalf("31st message: %v", err)
	}
	if err := a.AllowMessage(now.Add(2 * time.Second)); err != nil {
		t.Errorf("after 2s one token is back: %v", err)
	}
}

func TestNoLimitsNoObject(t *testing.T) {
	if NewAccountLimits(0, 0, 0, 0, 0) != nil {
		t.Error("an account without limits should have none to check")
	}
	var a *AccountLimits
	if a.AllowMessage(time.Now()) != nil || a.AllowRecipient(1000, time.Now()) != nil {
		t.Error("nil limits refuse")
	}
}
