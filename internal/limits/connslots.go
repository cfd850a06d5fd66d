package limits

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// ErrSlotsBusy: every connection slot of the mailbox is held, by this
// instance or others.
var ErrSlotsBusy = errors.New("every connection slot of the mailbox is in use across the relay's instances")

// wantFor is how long a WantSlot asks holders to give idle connections
// up; a waiting pool renews it at every try.
const wantFor = 3 * time.Second

// ConnSlots caps one mailbox's upstream connections across all instances
// (Microsoft refuses a 4th concurrent session per mailbox with 432 4.3.2):
// a connection holds a slot, a lease in the database that the instance
// renews and that expires with a dead instance. While the database is
// unreachable the instance opens at most its share of the cap.
type ConnSlots struct {
	co          *Coordination
	key         string
	size        atomic.Int32
	local       atomic.Int32 // slots taken on the instance's own share
	held        atomic.Int32 // slots held in the database
	onContended atomic.Pointer[func()]
	// requests: the slots count requests in flight, which end on their
	// own; asking holders to give idle connections up would be useless.
	requests bool
}

// ConnSlots returns the slots of key (a mailbox address, prefixed by
// what they count: connections or requests) for size holders across all
// instances.
func (co *Coordination) ConnSlots(key string, size int) *ConnSlots {
	s := &ConnSlots{co: co, key: key}
	s.size.Store(int32(size))
	return s
}

// RequestSlots returns the slots of key for size requests in flight
// across all instances (an HTTP transport's per-mailbox limit): like
// ConnSlots, but a waiter does not ask holders for idle connections.
func (co *Coordination) RequestSlots(key string, size int) *ConnSlots {
	s := co.ConnSlots(key, size)
	s.requests = true
	return s
}

// SetSize changes the cap (a reload); slots held beyond it are kept until
// their connections close.
func (s *ConnSlots) SetSize(n int) { s.size.Store(int32(n)) }

// OnContended sets what runs when another instance waits for a slot of
// this mailbox: the pool closes its idle connections so that their slots
// go to where the work is.
// Close unregisters it.
func (s *ConnSlots) OnContended(f func()) {
	s.onContended.Store(&f)
	co := s.co
	co.slotsMu.Lock()
	if co.slots[s.key] == nil {
		co.slots[s.key] = map[*ConnSlots]struct{}{}
	}
	co.slots[s.key][s] = struct{}{}
	co.slotsMu.Unlock()
}

// Close unregisters the slots from contention reports.
func (s *ConnSlots) Close() {
	co := s.co
	co.slotsMu.Lock()
	delete(co.slots[s.key], s)
	if len(co.slots[s.key]) == 0 {
		delete(co.slots, s.key)
	}
	co.slotsMu.Unlock()
}

// TryAcquire takes a free slot without waiting and returns its release,
// to be called once the connection is closed. ErrSlotsBusy when none is
// free: the holders were asked to give idle connections up, so a retry
// soon may succeed.
func (s *ConnSlots) TryAcquire() (release func(), err error) {
	co := s.co
	size := int(s.size.Load())
	if size <= 0 {
		return func() {}, nil
	}
	now := time.Now()
	var slot int
	var ok bool
	err = co.call(func(ctx context.Context) (err error) {
		slot, ok, err = co.coord.AcquireSlot(ctx, s.key, co.owner, size, now, now.Add(co.slotLease))
		return err
	})
	switch {
	case err == nil && ok:
		s.held.Add(1)
		return s.releaser(slot), nil
	case errors.Is(err, errUseFallback):
		return s.tryLocal(size)
	}
	if !s.requests {
		_ = co.call(func(ctx context.Context) error {
			return co.coord.WantSlot(ctx, s.key, co.owner, now.Add(wantFor))
		})
	}
	return nil, ErrSlotsBusy
}

// tryLocal takes a slot of the instance's own share of the cap; the
// connections it holds through the database count against that share.
func (s *ConnSlots) tryLocal(size int) (func(), error) {
	limit := int32(share(size, s.co.instances))
	for {
		n := s.local.Load()
		if n+s.held.Load() >= limit {
			return nil, ErrSlotsBusy
		}
		if s.local.CompareAndSwap(n, n+1) {
			var once atomic.Bool
			return func() {
				if once.CompareAndSwap(false, true) {
					s.local.Add(-1)
				}
			}, nil
		}
	}
}

// releaser frees a database slot once; in the background, because it is
// called where connections close, and an unreachable database must not
// hold that up (the lease then expires on its own).
func (s *ConnSlots) releaser(slot int) func() {
	var once atomic.Bool
	co := s.co
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		s.held.Add(-1)
		go co.releaseSlot(s.key, slot)
	}
}

// slotRef is a slot the instance gave up but the database may still hold.
type slotRef struct {
	key  string
	slot int
}

// releaseSlot frees a slot in the database; when that fails (the database
// is unreachable, or was moments ago) the slot is remembered and freed by
// the next renewal that reaches the database — else ExtendSlots would
// renew a slot no connection uses, for as long as the instance lives.
func (co *Coordination) releaseSlot(key string, slot int) {
	err := co.call(func(ctx context.Context) error {
		return co.coord.ReleaseSlot(ctx, key, co.owner, slot)
	})
	if err != nil {
		co.slotsMu.Lock()
		co.unreleased = append(co.unreleased, slotRef{key, slot})
		co.slotsMu.Unlock()
	}
}

// releaseUnreleased retries the releases that failed; false when some
// still fail (the renewal must then wait: it would renew them).
func (co *Coordination) releaseUnreleased() bool {
	co.slotsMu.Lock()
	todo := co.unreleased
	co.unreleased = nil
	co.slotsMu.Unlock()
	var failed []slotRef
	for _, r := range todo {
		ctx, cancel := context.WithTimeout(context.Background(), co.callTimeout)
		if err := co.coord.ReleaseSlot(ctx, r.key, co.owner, r.slot); err != nil {
			failed = append(failed, r)
		}
		cancel()
	}
	if len(failed) == 0 {
		return true
	}
	co.slotsMu.Lock()
	co.unreleased = append(co.unreleased, failed...)
	co.slotsMu.Unlock()
	return false
}

// Run renews the instance's slot leases until ctx ends and tells pools
// when another instance waits for one of their mailboxes' slots; then it
// frees every slot the instance holds.
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

func (co *Coordination) renew() {
	if !co.releaseUnreleased() {
		return
	}
	now := time.Now()
	var contended []string
	err := co.call(func(ctx context.Context) (err error) {
		contended, err = co.coord.ExtendSlots(ctx, co.owner, now, now.Add(co.slotLease))
		return err
	})
	if err != nil {
		return
	}
	for _, key := range contended {
		co.slotsMu.Lock()
		var fs []func()
		for s := range co.slots[key] {
			if f := s.onContended.Load(); f != nil {
				fs = append(fs, *f)
			}
		}
		co.slotsMu.Unlock()
		for _, f := range fs {
			f()
		}
	}
}

// releaseAll frees the instance's slots at shutdown, so that the others
// need not wait for the leases to expire.
func (co *Coordination) releaseAll() {
	// One last try whatever the state, without changing it (nor logging
	// an outage that a stopping instance no longer cares about).
	ctx, cancel := context.WithTimeout(context.Background(), co.callTimeout)
	defer cancel()
	if err := co.coord.ReleaseSlots(ctx, co.owner); err != nil {
		co.log.Debug("shared limits: the instance's slots were not freed at shutdown; their leases expire", "error", err)
	}
}
