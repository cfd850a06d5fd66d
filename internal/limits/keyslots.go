package limits

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// keySlots is what this process holds of one key's connection slots,
// whichever of its ConnSlots took them (a pool and, after a reload that
// changed it, its successor): the share while the database is
// unreachable, the waiters' polls and the contention callbacks are per
// key, as the cap is.
type keySlots struct {
	co  *Coordination
	key string
	// op lets one database call of the key's run at a time (acquire,
	// adopt): waiters queue for it and take the answer it left (busyUntil)
	// instead of asking again.
	op chan struct{}

	mu       sync.Mutex
	holds    map[*slotHold]struct{}
	dropping map[int]bool // slots given up whose release has not reached the database
	// stale: the leases of the holds may have lapsed (renewals failed
	// for longer than a lease) and been taken over: adopt them again.
	stale     bool
	gates     map[*ConnSlots]struct{} // with a contention callback
	busyUntil time.Time               // the last poll's "all held" stands until then
	wantSent  time.Time               // when the key's wait was last recorded

	users int // callers between use and leave (co.slotsMu)
}

// slotHold is one open connection's slot; slot is -1 while it has no
// lease in the database (taken on the share, or lost: see adoptLocked).
// Guarded by its keySlots' mu.
type slotHold struct{ slot int }

// use returns key's slots, kept while the caller uses them (leave).
func (co *Coordination) use(key string) *keySlots {
	co.slotsMu.Lock()
	defer co.slotsMu.Unlock()
	ks := co.keys[key]
	if ks == nil {
		ks = &keySlots{co: co, key: key, op: make(chan struct{}, 1),
			holds: map[*slotHold]struct{}{}, dropping: map[int]bool{}, gates: map[*ConnSlots]struct{}{}}
		co.keys[key] = ks
	}
	ks.users++
	return ks
}

func (co *Coordination) leave(ks *keySlots) {
	co.slotsMu.Lock()
	ks.users--
	co.slotsMu.Unlock()
}

// sweep forgets the keys nothing refers to any more.
func (co *Coordination) sweep(now time.Time) {
	co.slotsMu.Lock()
	defer co.slotsMu.Unlock()
	for key, ks := range co.keys {
		if ks.users == 0 && ks.idle(now) {
			delete(co.keys, key)
		}
	}
}

func (ks *keySlots) idle(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return len(ks.holds) == 0 && len(ks.gates) == 0 && len(ks.dropping) == 0 && !ks.stale &&
		!now.Before(ks.busyUntil) && now.Sub(ks.wantSent) >= wantFor
}

func (ks *keySlots) lockOp(ctx context.Context) error {
	select {
	case ks.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ks *keySlots) unlockOp() { <-ks.op }

func (ks *keySlots) busyAt(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return now.Before(ks.busyUntil)
}

func (ks *keySlots) setBusy(until time.Time) {
	ks.mu.Lock()
	ks.busyUntil = until
	ks.mu.Unlock()
}

// wantDue says whether the key's wait is to be recorded (again) now.
func (ks *keySlots) wantDue(now time.Time) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if now.Sub(ks.wantSent) < wantEvery {
		return false
	}
	ks.wantSent = now
	return true
}

// contended returns the contention callbacks of the key's gates but
// waiter.
func (ks *keySlots) contended(waiter *ConnSlots) []func() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var fs []func()
	for g := range ks.gates {
		if f := g.onContended.Load(); f != nil && g != waiter {
			fs = append(fs, *f)
		}
	}
	return fs
}

// hold records a slot leased in the database and returns its release.
func (ks *keySlots) hold(slot int) func() {
	h := &slotHold{slot: slot}
	ks.mu.Lock()
	ks.holds[h] = struct{}{}
	ks.mu.Unlock()
	return ks.releaser(h)
}

// holdOnShare takes a slot of the instance's share, limit, which counts
// every connection of the key the process holds.
func (ks *keySlots) holdOnShare(limit int) (func(), error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if len(ks.holds) >= limit {
		return nil, ErrSlotsBusy
	}
	h := &slotHold{slot: -1}
	ks.holds[h] = struct{}{}
	ks.co.recovering.Store(true)
	return ks.releaser(h), nil
}

// releaser frees a hold once; a database slot in the background, because
// it is called where connections close, and an unreachable database must
// not hold that up (the lease then expires on its own).
func (ks *keySlots) releaser(h *slotHold) func() {
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		ks.mu.Lock()
		delete(ks.holds, h)
		slot := h.slot
		if slot >= 0 {
			ks.dropping[slot] = true
		} else {
			ks.busyUntil = time.Time{} // the share has room now
		}
		ks.mu.Unlock()
		if slot >= 0 {
			go ks.co.releaseSlot(ks, slot)
		}
	}
}

// dropped records that slot's release reached the database: the slot is
// free, and the key's waiters may ask at once.
func (ks *keySlots) dropped(slot int) {
	ks.mu.Lock()
	delete(ks.dropping, slot)
	ks.busyUntil = time.Time{}
	ks.mu.Unlock()
}
