package limits

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnSlotsTellOtherPoolsOfTheKeyInThisProcess: after a reload that
// changed a mailbox's pool, the new pool waits for a slot the old pool's
// idle connections hold. The database does not report a wait to its own
// owner, so the process asks its other holders of the key itself.
func TestConnSlotsTellOtherPoolsOfTheKeyInThisProcess(t *testing.T) {
	for _, down := range []bool{false, true} {
		name := map[bool]string{false: "shared", true: "on the share"}[down]
		t.Run(name, func(t *testing.T) {
			c := newMemCoord()
			c.setDown(down)
			co := instance(t, c, "a", 1, nil)
			oldPool, newPool := co.ConnSlots("smtp:x", 1), co.ConnSlots("smtp:x", 1)
			var oldTold, newTold atomic.Int32
			oldPool.OnContended(func() { oldTold.Add(1) })
			newPool.OnContended(func() { newTold.Add(1) })
			defer oldPool.Close()
			defer newPool.Close()
			mustAcquire(t, oldPool)
			mustBeBusy(t, newPool, "the old pool holds the only slot")
			if oldTold.Load() == 0 {
				t.Fatal("the old pool was not asked for its idle connections")
			}
			if newTold.Load() != 0 {
				t.Fatal("the waiting pool was asked for its own idle connections")
			}
		})
	}
}

// TestConnSlotsWaitersShareOnePoll: many messages waiting for a slot of
// one mailbox cost the database one poll per interval, and one recorded
// wait per second, not one of each per waiter.
func TestConnSlotsWaitersShareOnePoll(t *testing.T) {
	c := newMemCoord()
	holder, waiter := instance(t, c, "b", 2, nil), instance(t, c, "a", 2, nil)
	mustAcquire(t, holder.ConnSlots("smtp:x", 1))
	s := waiter.ConnSlots("smtp:x", 1)
	const waiters, polls = 10, 30 // each polls every 10ms for 300ms
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			for range polls {
				if _, err := tryAcquire(t, s); !errors.Is(err, ErrSlotsBusy) {
					t.Errorf("TryAcquire: %v, want ErrSlotsBusy", err)
				}
				time.Sleep(10 * time.Millisecond) // a waiter's poll interval
			}
		})
	}
	wg.Wait()
	acquires, wants := c.count("AcquireSlot")-1, c.count("WantSlot")
	t.Logf("%d waiters × %d polls: %d AcquireSlot and %d WantSlot round trips", waiters, polls, acquires, wants)
	if acquires > 10 || wants > 3 {
		t.Fatalf("%d AcquireSlot and %d WantSlot round trips for %d polls of one key over 300ms, want one poll per 100ms and one wait per second",
			acquires, wants, waiters*polls)
	}
}

// TestOneCallerProbesAFailedDatabase: once RetryAfter has passed, one
// caller tries the database again while the others go on with the
// instance's share at once, instead of each waiting CallTimeout on a
// database that does not answer.
func TestOneCallerProbesAFailedDatabase(t *testing.T) {
	c := newMemCoord()
	co := NewCoordination(c, CoordinationSettings{Owner: "a", Instances: 1, RetryAfter: 200 * time.Millisecond, CallTimeout: 500 * time.Millisecond})
	l := co.NewSharedLimits("box@example.com", 0, 0, 1000, 0, 0)
	c.setHang(true)
	if _, err := l.Reserve(time.Now()); err != nil {
		t.Fatal(err)
	}
	afterRetry(co)
	before := c.count("ReserveMessage")
	var wg sync.WaitGroup
	var slow atomic.Int32
	for range 20 {
		wg.Go(func() {
			start := time.Now()
			if _, err := l.Reserve(time.Now()); err != nil {
				t.Error(err)
			}
			if time.Since(start) >= 400*time.Millisecond {
				slow.Add(1)
			}
		})
	}
	wg.Wait()
	if n := c.count("ReserveMessage") - before; n != 1 || slow.Load() != 1 {
		t.Fatalf("20 reservations after RetryAfter: %d reached the database, %d waited for it; want 1 and 1", n, slow.Load())
	}
}

// TestOnlyAnOutageDegrades: an error of the database that is no outage (a
// bug: a constraint, a missing function) is logged and counted, and the
// next call tries the database again; a caller that gives up is no
// outage either.
func TestOnlyAnOutageDegrades(t *testing.T) {
	c := newMemCoord()
	log := &logBuf{}
	co := instance(t, c, "a", 2, log)
	l := co.NewSharedLimits("box@example.com", 0, 0, 10, 0, 0)
	c.setBroken(errors.New(`postgres coordinator: reserving a message: ERROR: function coord_reserve_message does not exist (SQLSTATE 42883)`))
	if err := send(t, l, 0); err != nil {
		t.Fatalf("a bug of the shared limits refused a message: %v", err)
	}
	if d, _ := co.Degraded(); d {
		t.Fatal("a bug made the instance degraded")
	}
	if !strings.Contains(log.String(), "coord_reserve_message does not exist") || co.Errors() != 1 {
		t.Fatalf("the bug was not logged or counted (%d):\n%s", co.Errors(), log)
	}
	c.setBroken(nil)
	before := c.count("ReserveMessage")
	if err := send(t, l, 0); err != nil || c.count("ReserveMessage") != before+1 {
		t.Fatalf("after a bug the next message did not use the database: %v", err)
	}
	if strings.Contains(log.String(), "unreachable") {
		t.Fatalf("a bug was logged as an outage:\n%s", log)
	}
}

// TestACallerGivingUpIsNoOutage: a message whose client went away stops
// waiting for its slot; the database, which did not answer in that
// time, is not declared unreachable for it.
func TestACallerGivingUpIsNoOutage(t *testing.T) {
	c := newMemCoord()
	co := NewCoordination(c, CoordinationSettings{Owner: "a", Instances: 2, CallTimeout: time.Minute})
	s := co.ConnSlots("smtp:x", 1)
	c.setHang(true)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.TryAcquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TryAcquire with a caller that gave up: %v, want its context's error", err)
	}
	if d, _ := co.Degraded(); d {
		t.Fatal("a caller that gave up made the instance degraded")
	}
}
