package limits

import (
	"context"
	"slices"
	"time"
)

// recoverPerRenewal bounds the keys one renewal adopts or charges, so
// that a recovery with many accounts cannot hold the next renewal up past
// the leases; the rest wait for the next renewals (or their own next
// acquisition or reservation, which adopts or charges its key first).
const recoverPerRenewal = 100

// Run renews the instance's slot leases until ctx ends and tells pools
// when another instance waits for one of their mailboxes' slots; then it
// frees every slot the instance holds, at once (README "Several
// instances": a stopped instance's slots are free before its leases end).
func (co *Coordination) Run(ctx context.Context) {
	every := min(co.slotLease/3, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			co.releaseAll()
			return
		case <-t.C:
			co.renew()
		}
	}
}

// renew extends every lease of the instance in one statement. It is tried
// at every tick, whatever RetryAfter says: the leases are shorter than it,
// and one failed call must not cost the instance its slots; the renewal
// is also how the instance learns that the database is back. When it
// answers, connections without a lease get one, what was sent on the
// share is charged, and releases that failed are retried.
func (co *Coordination) renew() {
	start := time.Now()
	until := start.Add(co.slotLease)
	var contended []string
	ctx := context.Background()
	err := co.classify(ctx, co.run(ctx, func(ctx context.Context) (err error) {
		contended, err = co.coord.ExtendSlots(ctx, co.owner, start, until)
		return err
	}))
	if err != nil {
		return
	}
	if time.Now().After(co.renewedUntil) {
		// The renewal may have come after the leases ended, and another
		// instance may have taken them over.
		co.markStale()
	}
	co.renewedUntil = until
	co.recover(ctx)
	co.tellContended(contended)
	co.sweep(time.Now())
}

// markStale marks every key with slots in the database for adoption.
func (co *Coordination) markStale() {
	for _, ks := range co.allKeys() {
		ks.mu.Lock()
		held := len(ks.holds) > 0
		ks.mu.Unlock()
		if held {
			ks.suspect()
		}
	}
}

// suspect marks the key for adoption: the database may hold leases of it
// that are not the process's holds, or have lost some of them.
func (ks *keySlots) suspect() {
	ks.mu.Lock()
	ks.stale = true
	ks.mu.Unlock()
	ks.co.recovering.Store(true)
}

func (co *Coordination) allKeys() []*keySlots {
	co.slotsMu.Lock()
	defer co.slotsMu.Unlock()
	out := make([]*keySlots, 0, len(co.keys))
	for _, ks := range co.keys {
		out = append(out, ks)
	}
	return out
}

// recover brings the database up to date with what the instance did
// without it: it frees slots whose release failed, adopts connections
// without a lease, and charges what was sent on the share.
func (co *Coordination) recover(ctx context.Context) {
	budget := recoverPerRenewal
	if co.recovering.Swap(false) {
		for _, ks := range co.allKeys() {
			if budget == 0 {
				co.recovering.Store(true) // the rest next time
				break
			}
			if ks.needsAdoption() && ks.lockOp(ctx) == nil {
				co.adoptLocked(ctx, ks)
				ks.unlockOp()
				budget--
			}
		}
	}
	for _, ks := range co.allKeys() {
		co.retryDrops(ctx, ks)
	}
	owing := co.owing()
	slices.Sort(owing)
	for _, key := range owing[:min(budget, len(owing))] {
		if co.settle(ctx, key) != nil {
			return
		}
	}
}

// needsAdoption: some hold has no lease, or may have lost it.
func (ks *keySlots) needsAdoption() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.needsAdoptionLocked()
}

func (ks *keySlots) needsAdoptionLocked() bool {
	if ks.stale {
		return true
	}
	for h := range ks.holds {
		if h.slot < 0 {
			return true
		}
	}
	return false
}

// adoptLocked (the key's operation lock held) makes the database hold
// exactly one lease for each of the key's open connections: those opened
// on the share get one, beyond the cap if need be, and those whose lease
// lapsed get theirs back or another; anyone else waits until they close
// (README "Failure modes"). A failure leaves it for the next try.
func (co *Coordination) adoptLocked(ctx context.Context, ks *keySlots) {
	if !ks.needsAdoption() {
		return
	}
	co.retryDrops(ctx, ks)
	ks.mu.Lock()
	n := len(ks.holds)
	ks.mu.Unlock()
	now := time.Now()
	var slots []int
	err := co.call(ctx, func(ctx context.Context) (err error) {
		slots, err = co.coord.AdoptSlots(ctx, ks.key, co.owner, n, now, now.Add(co.slotLease))
		return err
	})
	if err != nil {
		co.recovering.Store(true)
		return
	}
	for _, slot := range ks.assign(slots) {
		go co.releaseSlot(ks, slot)
	}
	co.log.Debug("shared limits: open connections leased again", "key", ks.key, "connections", n)
}

// assign gives the slots the database holds for the key to its holds:
// each keeps its own if it is among them, the others take the rest.
// Slots left over (their connection closed meanwhile, or their release
// is under way) are returned, to be released; holds left without one
// (opened meanwhile) wait for the next adoption.
func (ks *keySlots) assign(slots []int) (spare []int) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	free := map[int]bool{}
	for _, s := range slots {
		if ks.dropping[s] {
			spare = append(spare, s)
			continue
		}
		free[s] = true
	}
	for s := range ks.dropping {
		if !slices.Contains(slots, s) {
			delete(ks.dropping, s) // AdoptSlots freed it
		}
	}
	var homeless []*slotHold
	for h := range ks.holds {
		if h.slot >= 0 && free[h.slot] {
			delete(free, h.slot)
		} else {
			homeless = append(homeless, h)
		}
	}
	for _, h := range homeless {
		h.slot = -1
		for s := range free {
			h.slot = s
			delete(free, s)
			break
		}
		if h.slot < 0 {
			ks.co.recovering.Store(true)
		}
	}
	for s := range free {
		ks.dropping[s] = true
		spare = append(spare, s)
	}
	ks.stale = false
	return spare
}

// retryDrops frees the key's slots whose release failed; it stops at the
// first failure (the database is unreachable again).
func (co *Coordination) retryDrops(ctx context.Context, ks *keySlots) {
	ks.mu.Lock()
	drops := make([]int, 0, len(ks.dropping))
	for s := range ks.dropping {
		drops = append(drops, s)
	}
	ks.mu.Unlock()
	for _, slot := range drops {
		err := co.call(ctx, func(ctx context.Context) error {
			return co.coord.ReleaseSlot(ctx, ks.key, co.owner, slot)
		})
		if err != nil {
			return
		}
		ks.dropped(slot)
	}
}

// tellContended runs the contention callbacks of the keys other
// instances wait for.
func (co *Coordination) tellContended(keys []string) {
	for _, key := range keys {
		co.slotsMu.Lock()
		ks := co.keys[key]
		co.slotsMu.Unlock()
		if ks == nil {
			continue
		}
		for _, f := range ks.contended(nil) {
			f()
		}
	}
}

// releaseAll frees the instance's slots at shutdown, so that the others
// need not wait for the leases to expire; later calls use the share
// without asking the database (it is being closed).
func (co *Coordination) releaseAll() {
	co.stopped.Store(true)
	// One last try whatever the state, without changing it (nor logging
	// an outage that a stopping instance no longer cares about).
	ctx, cancel := context.WithTimeout(context.Background(), co.callTimeout)
	defer cancel()
	if err := co.coord.ReleaseSlots(ctx, co.owner); err != nil {
		co.log.Debug("shared limits: the instance's slots were not freed at shutdown; their leases expire", "error", err)
	}
}
