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
// up; wantEvery is how often a key's waiters renew it (holders read the
// waits at each renewal, every second).
const (
	wantFor   = 3 * time.Second
	wantEvery = time.Second
)

// busyFor is how long the database's "every slot is held" answer stands
// for a key in this process: the messages waiting for a slot of one
// mailbox share one poll per interval instead of each polling on its own
// (a pool's waiters poll every 100ms). A slot this process frees ends it
// at once.
const busyFor = 100 * time.Millisecond

// ConnSlots caps one mailbox's upstream connections across all instances
// (Microsoft refuses a 4th concurrent session per mailbox with 432 4.3.2):
// a connection holds a slot, a lease in the database that the instance
// renews and that expires with a dead instance. While the database is
// unreachable the instance opens at most its share of the cap.
//
// Each pool has its own ConnSlots (a reload that changes a mailbox's pool
// makes a second one); what they hold is counted per key in the process
// (keySlots), so that they share the instance's share and tell each other
// when one waits for the slots the other holds.
type ConnSlots struct {
	co          *Coordination
	key         string
	size        atomic.Int32
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

// OnContended sets what runs when someone else waits for a slot of this
// mailbox — another instance, or another pool of this one: the pool
// closes its idle connections so that their slots go to where the work
// is. Close unregisters it.
func (s *ConnSlots) OnContended(f func()) {
	s.onContended.Store(&f)
	ks := s.co.use(s.key)
	defer s.co.leave(ks)
	ks.mu.Lock()
	ks.gates[s] = struct{}{}
	ks.mu.Unlock()
}

// Close unregisters the slots from contention reports.
func (s *ConnSlots) Close() {
	ks := s.co.use(s.key)
	defer s.co.leave(ks)
	ks.mu.Lock()
	delete(ks.gates, s)
	ks.mu.Unlock()
}

// TryAcquire takes a free slot without waiting and returns its release,
// to be called once the connection is closed. ErrSlotsBusy when none is
// free: the holders were asked to give idle connections up, so a retry
// soon may succeed. ctx is the caller's: when it ends first, its error.
func (s *ConnSlots) TryAcquire(ctx context.Context) (release func(), err error) {
	size := int(s.size.Load())
	if size <= 0 {
		return func() {}, nil
	}
	ks := s.co.use(s.key)
	defer s.co.leave(ks)
	if err := ks.lockOp(ctx); err != nil {
		return nil, err
	}
	release, err = s.acquireLocked(ctx, ks, size)
	ks.unlockOp()
	if errors.Is(err, ErrSlotsBusy) {
		s.busy(ctx, ks)
	}
	return release, err
}

// acquireLocked is TryAcquire under the key's operation lock: connections
// that have no lease get one first (recover.go), then a slot is asked for
// unless the last poll said they are all held.
func (s *ConnSlots) acquireLocked(ctx context.Context, ks *keySlots, size int) (func(), error) {
	co := s.co
	co.adoptLocked(ctx, ks)
	now := time.Now()
	if ks.busyAt(now) {
		return nil, ErrSlotsBusy
	}
	var slot int
	var ok bool
	err := co.call(ctx, func(ctx context.Context) (err error) {
		slot, ok, err = co.coord.AcquireSlot(ctx, s.key, co.owner, size, now, now.Add(co.slotLease))
		return err
	})
	switch {
	case err == nil && ok:
		return ks.hold(slot), nil
	case err == nil:
		ks.setBusy(now.Add(busyFor))
		return nil, ErrSlotsBusy
	case errors.Is(err, errUseFallback):
		// The call may have leased a slot whose answer was lost: the key
		// is adopted again once the database answers (exactly the
		// connections open then). The connections held through the
		// database count against the share too: they stay open.
		ks.suspect()
		return ks.holdOnShare(share(size, co.instances))
	}
	return nil, err
}

// busy tells the key's holders that s waits: the other pools of this
// process at once (the database does not report an owner's wait to the
// same owner), the other instances through a wait in the database,
// recorded once per wantEvery for all of the key's waiters.
func (s *ConnSlots) busy(ctx context.Context, ks *keySlots) {
	for _, f := range ks.contended(s) {
		f()
	}
	now := time.Now()
	if s.requests || !ks.wantDue(now) {
		return
	}
	co := s.co
	_ = co.call(ctx, func(ctx context.Context) error {
		return co.coord.WantSlot(ctx, s.key, co.owner, now.Add(wantFor))
	})
}

// releaseSlot frees a slot in the database; when that fails (the database
// is unreachable, or was moments ago) the slot stays among the key's
// dropped ones and the renewal frees it once the database answers.
func (co *Coordination) releaseSlot(ks *keySlots, slot int) {
	err := co.call(context.Background(), func(ctx context.Context) error {
		return co.coord.ReleaseSlot(ctx, ks.key, co.owner, slot)
	})
	if err == nil {
		ks.dropped(slot)
	}
}
