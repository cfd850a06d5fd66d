package storetest

import (
	"slices"
	"testing"
	"time"
)

// acquire leases a slot of key that must be granted, and must be want,
// from base+d until base+until.
func (e *coordEnv) acquire(key, owner string, size, want int, d, until time.Duration) {
	e.t.Helper()
	slot, ok, err := e.c.AcquireSlot(e.ctx, key, owner, size, e.at(d), e.at(until))
	if err != nil || !ok || slot != want {
		e.t.Fatalf("AcquireSlot(%s, %s, size %d, base%+v) = slot %d, %v, %v; want slot %d", key, owner, size, d, slot, ok, err, want)
	}
}

// full tries to lease a slot of key that must be refused.
func (e *coordEnv) full(key, owner string, size int, d time.Duration) {
	e.t.Helper()
	slot, ok, err := e.c.AcquireSlot(e.ctx, key, owner, size, e.at(d), e.at(d+time.Minute))
	if err != nil || ok {
		e.t.Fatalf("AcquireSlot(%s, %s, size %d, base%+v) = slot %d, %v, %v; want refused", key, owner, size, d, slot, ok, err)
	}
}

func (e *coordEnv) releaseSlot(key, owner string, slot int) {
	e.t.Helper()
	if err := e.c.ReleaseSlot(e.ctx, key, owner, slot); err != nil {
		e.t.Fatalf("ReleaseSlot(%s, %s, %d): %v", key, owner, slot, err)
	}
}

func (e *coordEnv) wantInUse(key string, d time.Duration, want int) {
	e.t.Helper()
	n, err := e.c.SlotsInUse(e.ctx, key, e.at(d))
	if err != nil || n != want {
		e.t.Fatalf("SlotsInUse(%s, base%+v) = %d, %v; want %d", key, d, n, err, want)
	}
}

// extend renews owner's leases at base+d until base+until and checks the
// keys reported contended.
func (e *coordEnv) extend(owner string, d, until time.Duration, contended ...string) {
	e.t.Helper()
	got, err := e.c.ExtendSlots(e.ctx, owner, e.at(d), e.at(until))
	if err != nil || !slices.Equal(got, contended) {
		e.t.Fatalf("ExtendSlots(%s, base%+v) = %q, %v; want %q", owner, d, got, err, contended)
	}
}

func (e *coordEnv) want(key, owner string, until time.Duration) {
	e.t.Helper()
	if err := e.c.WantSlot(e.ctx, key, owner, e.at(until)); err != nil {
		e.t.Fatalf("WantSlot(%s, %s): %v", key, owner, err)
	}
}

var slotTests = []coordTest{
	{"size is respected", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 2, 0, 0, time.Minute)
		e.acquire("k", "B", 2, 1, 0, time.Minute)
		e.full("k", "C", 2, 0)
		e.full("k", "A", 2, 0)
		e.wantInUse("k", 0, 2)
	}},
	{"one owner may hold several", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 3, 0, 0, time.Minute)
		e.acquire("k", "A", 3, 1, 0, time.Minute)
		e.acquire("k", "A", 3, 2, 0, time.Minute)
		e.full("k", "A", 3, 0)
	}},
	{"a released slot is the next one handed out", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 2, 0, 0, time.Minute)
		e.acquire("k", "B", 2, 1, 0, time.Minute)
		e.releaseSlot("k", "A", 0)
		e.wantInUse("k", 0, 1)
		e.acquire("k", "C", 2, 0, 0, time.Minute)
	}},
	{"releasing another owner's slot changes nothing", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.releaseSlot("k", "B", 0)
		e.releaseSlot("k", "A", 1)
		e.releaseSlot("other", "A", 0)
		e.wantInUse("k", 0, 1)
		e.full("k", "B", 1, 0)
	}},
	{"an expired lease is taken over", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.full("k", "B", 1, time.Minute-time.Nanosecond)
		e.wantInUse("k", time.Minute-time.Nanosecond, 1)
		e.wantInUse("k", time.Minute, 0)
		e.acquire("k", "B", 1, 0, time.Minute, 2*time.Minute)
		// A's lease ended: its release must not free B's.
		e.releaseSlot("k", "A", 0)
		e.wantInUse("k", time.Minute, 1)
		e.full("k", "C", 1, time.Minute)
	}},
	{"a lowered size counts the slots above it", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 3, 0, 0, time.Minute)
		e.acquire("k", "B", 3, 1, 0, time.Minute)
		e.acquire("k", "C", 3, 2, 0, time.Minute)
		e.full("k", "D", 2, 0)
		e.releaseSlot("k", "A", 0)
		e.full("k", "D", 2, 0) // B and C still hold two
		e.releaseSlot("k", "C", 2)
		e.acquire("k", "D", 2, 0, 0, time.Minute)
		e.full("k", "E", 2, 0)
		e.releaseSlot("k", "B", 1)
		e.acquire("k", "E", 2, 1, 0, time.Minute)
	}},
	{"live leases only are in use", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 3, 0, 0, time.Minute)
		e.acquire("k", "B", 3, 1, 0, 2*time.Minute)
		e.wantInUse("k", 90*time.Second, 1)
		e.wantInUse("k", 2*time.Minute, 0)
		e.wantInUse("unknown", 0, 0)
	}},
	{"ExtendSlots renews every lease of the owner", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.acquire("l", "A", 2, 0, 0, time.Minute)
		e.acquire("l", "B", 2, 1, 0, time.Minute)
		e.extend("A", 30*time.Second, 2*time.Minute)
		e.full("k", "B", 1, 90*time.Second)
		e.wantInUse("l", 90*time.Second, 1)
		e.acquire("l", "C", 2, 1, 90*time.Second, 3*time.Minute)
		e.acquire("k", "B", 1, 0, 2*time.Minute, 3*time.Minute)
	}},
	{"ExtendSlots renews an expired lease nobody took", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.extend("A", 70*time.Second, 3*time.Minute)
		e.wantInUse("k", 2*time.Minute, 1)
		e.full("k", "B", 1, 2*time.Minute)
	}},
	{"ExtendSlots leaves a lease taken over alone", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.acquire("k", "B", 1, 0, 70*time.Second, 80*time.Second)
		e.extend("A", 75*time.Second, 5*time.Minute)
		e.wantInUse("k", 90*time.Second, 0)
	}},
	{"ReleaseSlots frees every slot of the owner", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 3, 0, 0, time.Hour)
		e.acquire("k", "A", 3, 1, 0, time.Hour)
		e.acquire("k", "B", 3, 2, 0, time.Hour)
		e.acquire("l", "A", 3, 0, 0, time.Hour)
		if err := e.c.ReleaseSlots(e.ctx, "A"); err != nil {
			t.Fatalf("ReleaseSlots: %v", err)
		}
		e.wantInUse("k", 0, 1)
		e.wantInUse("l", 0, 0)
		e.acquire("k", "C", 3, 0, 0, time.Hour)
		e.extend("A", 0, 2*time.Hour)
		e.wantInUse("k", 90*time.Minute, 0)
		if err := e.c.ReleaseSlots(e.ctx, "nobody"); err != nil {
			t.Fatalf("ReleaseSlots of an owner without slots: %v", err)
		}
	}},
}

var contentionTests = []coordTest{
	{"ExtendSlots reports the keys others wait for until their wait ends", func(t *testing.T, e *coordEnv) {
		e.acquire("k1", "A", 1, 0, 0, time.Hour)
		e.acquire("k2", "A", 1, 0, 0, time.Hour)
		e.acquire("k3", "B", 1, 0, 0, time.Hour)
		e.extend("A", 0, time.Hour)
		e.want("k2", "B", time.Minute)
		e.want("k3", "A", time.Minute)    // A waits, but A holds nothing of k3
		e.want("k1", "A", 10*time.Minute) // A's own wait is no contention for A
		e.extend("A", 10*time.Second, time.Hour, "k2")
		e.want("k1", "C", 2*time.Minute)
		e.extend("A", 20*time.Second, time.Hour, "k1", "k2")
		e.extend("B", 20*time.Second, time.Hour, "k3")
		e.extend("A", time.Minute, time.Hour, "k1")
		e.extend("A", 2*time.Minute, time.Hour)
		e.extend("nobody", 0, time.Hour)
	}},
	{"of two waits of one owner the later end counts", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Hour)
		e.want("k", "B", 2*time.Minute)
		e.want("k", "B", time.Minute)
		e.extend("A", 90*time.Second, time.Hour, "k")
		e.want("k", "B", 3*time.Minute)
		e.extend("A", 150*time.Second, time.Hour, "k")
	}},
	{"ReleaseSlots forgets the owner's waits", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Hour)
		e.want("k", "B", time.Hour)
		if err := e.c.ReleaseSlots(e.ctx, "B"); err != nil {
			t.Fatalf("ReleaseSlots: %v", err)
		}
		e.extend("A", 0, time.Hour)
	}},
}
