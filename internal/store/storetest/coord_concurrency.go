package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// instances is how many handles (instances, each with its own
// connections) the concurrency tests spread their calls over.
const instances = 4

// instances returns n handles on the subtest's database, e.c first.
func (e *coordEnv) instances(n int) []store.Coordinator {
	out := []store.Coordinator{e.c}
	for len(out) < n {
		out = append(out, e.open(e.t))
	}
	return out
}

// race makes n calls of f at once, call i through instance i mod
// len(insts), and waits for them all.
func race(n int, insts []store.Coordinator, f func(i int, c store.Coordinator)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			f(i, insts[i%len(insts)])
		})
	}
	close(start)
	wg.Wait()
}

// raceReservations makes n reservations at base at once and returns how
// many were granted; each refusal must be want.
func (e *coordEnv) raceReservations(n int, l store.SharedLimits, want store.Refusal) int {
	var granted atomic.Int32
	race(n, e.instances(instances), func(_ int, c store.Coordinator) {
		_, err := c.ReserveMessage(e.ctx, "k", e.base, l)
		if err == nil {
			granted.Add(1)
			return
		}
		if r, ok := errors.AsType[*store.Refusal](err); !ok || !sameRefusal(r, want) {
			e.t.Errorf("ReserveMessage: %v (%+v), want a refusal %+v", err, r, want)
		}
	})
	return int(granted.Load())
}

var concurrencyTests = []coordTest{
	{"50 reservations at once with a burst of 10", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 10, Burst: 10}
		if n := e.raceReservations(50, l, rateRefusal(l, e.at(6*time.Second))); n != 10 {
			t.Fatalf("%d of 50 granted, want 10", n)
		}
		e.wantUsage("k", 0, 10, 0)
	}},
	{"50 reservations at once with a daily quota of 10", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 10}
		if n := e.raceReservations(50, l, dailyMsgsRefusal(l, e.at(day))); n != 10 {
			t.Fatalf("%d of 50 granted, want 10", n)
		}
		e.wantUsage("k", 0, 10, 0)
	}},
	{"40 recipients at once with a daily quota of 7", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyRcpts: 7}
		g := e.grant("k", 0, l)
		var granted atomic.Int32
		race(40, e.instances(instances), func(_ int, c store.Coordinator) {
			if err := c.ReserveRcpt(e.ctx, "k", g, e.base, l); err == nil {
				granted.Add(1)
			} else if r, ok := errors.AsType[*store.Refusal](err); !ok || r.Kind != store.RefusedDailyRcpts {
				t.Errorf("ReserveRcpt: %v, want a daily_recipients refusal", err)
			}
		})
		if n := granted.Load(); n != 7 {
			t.Fatalf("%d of 40 recipients granted, want 7", n)
		}
		e.wantUsage("k", 0, 1, 7)
	}},
	{"20 acquisitions at once of 3 slots", func(t *testing.T, e *coordEnv) {
		var mu sync.Mutex
		var slots []int
		race(20, e.instances(instances), func(i int, c store.Coordinator) {
			slot, ok, err := c.AcquireSlot(e.ctx, "k", fmt.Sprint("owner", i), 3, e.base, e.at(time.Minute))
			if err != nil {
				t.Errorf("AcquireSlot: %v", err)
			}
			if ok {
				mu.Lock()
				slots = append(slots, slot)
				mu.Unlock()
			}
		})
		slices.Sort(slots)
		if !slices.Equal(slots, []int{0, 1, 2}) {
			t.Fatalf("slots granted %v, want [0 1 2]", slots)
		}
		e.wantInUse("k", 0, 3)
	}},
	{"reservations and releases at once never exceed the quota", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 5}
		var outstanding, granted atomic.Int32
		race(12, e.instances(instances), func(_ int, c store.Coordinator) {
			for range 15 {
				g, err := c.ReserveMessage(e.ctx, "k", e.base, l)
				if err != nil {
					continue
				}
				granted.Add(1)
				if n := outstanding.Add(1); n > 5 {
					t.Errorf("%d messages reserved at once, the quota is 5", n)
				}
				outstanding.Add(-1)
				if err := c.Release(e.ctx, "k", g, 1, 0, e.base, l); err != nil {
					t.Errorf("Release: %v", err)
				}
			}
		})
		if granted.Load() < 5 {
			t.Fatalf("only %d reservations granted", granted.Load())
		}
		e.wantUsage("k", 0, 0, 0)
	}},
	{"holders never exceed the slots while leases are extended and waited for", func(t *testing.T, e *coordEnv) {
		slotChurn(t, e)
	}},
	{"adoptions and acquisitions at once hand each slot out once", func(t *testing.T, e *coordEnv) {
		raceAdoptions(t, e)
	}},
	{"charges and reservations at once all count", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 1000, PerMinute: 6000, Burst: 1000}
		race(24, e.instances(instances), func(i int, c store.Coordinator) {
			if i%2 == 0 {
				ch := store.Charge{Counts: []store.BucketCount{{Bucket: bucketOf(e.base), Msgs: 2, Rcpts: 1}}, RateDebt: time.Millisecond}
				if err := c.Charge(e.ctx, "k", ch, e.base, l); err != nil {
					t.Errorf("Charge: %v", err)
				}
			} else if _, err := c.ReserveMessage(e.ctx, "k", e.base, l); err != nil {
				t.Errorf("ReserveMessage: %v", err)
			}
		})
		e.wantUsage("k", 0, 36, 12)
	}},
}

// raceAdoptions has owners adopt two slots each while others acquire one
// of three, all at once: no slot may end up with two holders, and the
// acquirers get what the adopters left of the cap at most.
func raceAdoptions(t *testing.T, e *coordEnv) {
	var mu sync.Mutex
	held := map[int]string{}
	acquired := 0
	take := func(slot int, owner string) {
		mu.Lock()
		defer mu.Unlock()
		if other, ok := held[slot]; ok {
			t.Errorf("slot %d is both %s's and %s's", slot, other, owner)
		}
		held[slot] = owner
	}
	race(12, e.instances(instances), func(i int, c store.Coordinator) {
		owner := fmt.Sprint("owner", i)
		if i%3 == 0 {
			slots, err := c.AdoptSlots(e.ctx, "k", owner, 2, e.base, e.at(time.Minute))
			if err != nil || len(slots) != 2 {
				t.Errorf("AdoptSlots: %v, %v; want 2 slots", slots, err)
			}
			for _, s := range slots {
				take(s, owner)
			}
			return
		}
		slot, ok, err := c.AcquireSlot(e.ctx, "k", owner, 3, e.base, e.at(time.Minute))
		if err != nil {
			t.Errorf("AcquireSlot: %v", err)
		}
		if ok {
			take(slot, owner)
			mu.Lock()
			acquired++
			mu.Unlock()
		}
	})
	if acquired > 3 {
		t.Fatalf("%d acquisitions granted with a cap of 3", acquired)
	}
	e.wantInUse("k", 0, len(held))
	if len(held) != 8+acquired {
		t.Fatalf("%d slots held, want the adopters' 8 and the %d acquired", len(held), acquired)
	}
}

// slotChurn has goroutines of several instances take a slot of one key
// and then of another, renew their leases, record waits and release, over
// and over, and checks that no key ever has more holders than slots. An
// owner holding slots of several keys is what lock ordering is for: a
// deadlock would surface as an error.
func slotChurn(t *testing.T, e *coordEnv) {
	const size = 2
	keys := []string{"k1", "k2", "k3"}
	var holders [3]atomic.Int32
	hold := func(k int, c store.Coordinator, owner string) (release func()) {
		slot, ok, err := c.AcquireSlot(e.ctx, keys[k], owner, size, e.base, e.at(time.Hour))
		if err != nil {
			t.Errorf("AcquireSlot: %v", err)
		}
		if !ok {
			if err := c.WantSlot(e.ctx, keys[k], owner, e.at(time.Minute)); err != nil {
				t.Errorf("WantSlot: %v", err)
			}
			return func() {}
		}
		if n := holders[k].Add(1); n > size {
			t.Errorf("%s has %d holders, the size is %d", keys[k], n, size)
		}
		return func() {
			holders[k].Add(-1)
			if err := c.ReleaseSlot(e.ctx, keys[k], owner, slot); err != nil {
				t.Errorf("ReleaseSlot: %v", err)
			}
		}
	}
	race(8, e.instances(instances), func(i int, c store.Coordinator) {
		owner := fmt.Sprint("instance", i%instances)
		for j := range 20 {
			first := hold((i+j)%3, c, owner)
			second := hold((i+j+1)%3, c, owner)
			if _, err := c.ExtendSlots(e.ctx, owner, e.base, e.at(time.Hour)); err != nil {
				t.Errorf("ExtendSlots: %v", err)
			}
			second()
			first()
		}
	})
	for k := range keys {
		e.wantInUse(keys[k], 0, 0)
	}
}
