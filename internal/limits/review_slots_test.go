package limits

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A connection closed while the instance is in its degraded window must
// not leave its database slot held for ever: once the database is back,
// Run renews every row of the owner (coord_extend_slots), the phantom too.
func TestReviewSlotReleasedWhileDegradedIsNotLeaked(t *testing.T) {
	mc := newMemCoord()
	a := NewCoordination(mc, CoordinationSettings{Owner: "a", Instances: 2, RetryAfter: 200 * time.Millisecond, SlotLease: time.Second})
	b := NewCoordination(mc, CoordinationSettings{Owner: "b", Instances: 2, RetryAfter: 50 * time.Millisecond, SlotLease: 300 * time.Millisecond})
	sa, sb := a.ConnSlots("smtp:x", 1), b.ConnSlots("smtp:x", 1)

	release, err := sa.TryAcquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mc.setDown(true)
	a.renew() // a blip: a is degraded for RetryAfter
	mc.setDown(false)
	release() // the connection closes inside the degraded window

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Run(ctx)

	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if rel, err := sb.TryAcquire(t.Context()); err == nil {
			rel()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	t.Fatalf("b never got the slot a no longer uses: %+v", mc.slots["smtp:x"])
}

// While degraded an instance may hold its share of the cap (README
// "Failure modes"); the slots it already holds in the database are
// connections it keeps open and count towards that share.
func TestReviewFallbackShareCountsHeldSlots(t *testing.T) {
	mc := newMemCoord()
	a := instance(t, mc, "a", 3, nil)
	sa := a.ConnSlots("smtp:x", 3)
	for i := 0; i < 2; i++ {
		if _, err := sa.TryAcquire(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	mc.setDown(true)
	if _, err := sa.TryAcquire(t.Context()); !errors.Is(err, ErrSlotsBusy) {
		t.Fatalf("a holds 2 connections, its share is 1, and it got a 3rd: err = %v", err)
	}
}
