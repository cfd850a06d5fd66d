package limits

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tryAcquire takes a slot of s without waiting.
func tryAcquire(t *testing.T, s *ConnSlots) (func(), error) {
	t.Helper()
	return s.TryAcquire(t.Context())
}

// mustAcquire takes a slot of s that must be free.
func mustAcquire(t *testing.T, s *ConnSlots) func() {
	t.Helper()
	release, err := tryAcquire(t, s)
	if err != nil {
		t.Fatalf("TryAcquire(%s): %v", s.key, err)
	}
	return release
}

// mustBeBusy requires every slot of s to be held.
func mustBeBusy(t *testing.T, s *ConnSlots, why string) {
	t.Helper()
	if release, err := tryAcquire(t, s); !errors.Is(err, ErrSlotsBusy) {
		if release != nil {
			release()
		}
		t.Fatalf("%s: TryAcquire(%s) = %v, want ErrSlotsBusy", why, s.key, err)
	}
}

// awaitFree waits until a slot of s can be taken (and gives it back).
func awaitFree(t *testing.T, s *ConnSlots) {
	t.Helper()
	waitFor(t, func() bool {
		release, err := tryAcquire(t, s)
		if err == nil {
			release()
		}
		return err == nil
	})
}

// afterRetry waits until co would try its database again.
func afterRetry(co *Coordination) { time.Sleep(co.retryAfter + 10*time.Millisecond) }

// send reserves, and commits, one message of n recipients.
func send(t *testing.T, l Limiter, n int) error {
	t.Helper()
	r, err := l.Reserve(time.Now())
	if err != nil {
		return err
	}
	for range n {
		if err := r.AddRcpt(time.Now()); err != nil {
			r.Cancel(time.Now())
			return err
		}
	}
	r.Commit()
	return nil
}

// sendDuringOutage takes the database down and sends msgs messages of
// rcpts recipients each, which must pass on the share.
func sendDuringOutage(t *testing.T, c *memCoord, l Limiter, msgs, rcpts int) {
	t.Helper()
	c.setDown(true)
	for range msgs {
		if err := send(t, l, rcpts); err != nil {
			t.Fatalf("on the share: %v", err)
		}
	}
}

// TestSharedLimitsChargeWhatWasSentOnTheShare: what an instance sent on
// its share during an outage counts in the database once it is back, so
// that the instances together do not send a second quota; what it did
// not send (cancelled) does not count.
func TestSharedLimitsChargeWhatWasSentOnTheShare(t *testing.T) {
	c := newMemCoord()
	co := instance(t, c, "a", 3, nil)
	l := co.NewSharedLimits("box@example.com", 0, 0, 9, 100, 0)
	sendDuringOutage(t, c, l, 3, 2)
	if r, err := l.Reserve(time.Now()); err == nil {
		t.Fatal("a 4th message passed the share of 9/3")
	} else if r != nil {
		r.Cancel(time.Now())
	}
	c.setDown(false)
	afterRetry(co)
	admitted := 0
	for range 9 {
		if send(t, l, 0) == nil {
			admitted++
		}
	}
	if admitted != 6 || c.msgs["box@example.com"] != 9 || c.rcpts["box@example.com"] != 6 {
		t.Fatalf("after the outage: %d admitted (want 6 = 9 less the 3 sent on the share), the database counts %d messages and %d recipients (want 9, 6)",
			admitted, c.msgs["box@example.com"], c.rcpts["box@example.com"])
	}
	if n := c.count("Charge"); n != 1 {
		t.Fatalf("%d charges, want 1", n)
	}
}

// TestSharedLimitsChargeIsRetriedUntilItLands: the background renewal
// charges what was sent on the share as soon as the database answers,
// whether or not the account sends again, and keeps it while it fails.
func TestSharedLimitsChargeIsRetriedUntilItLands(t *testing.T) {
	c := newMemCoord()
	co := instance(t, c, "a", 2, nil)
	l := co.NewSharedLimits("box@example.com", 60, 4, 10, 0, 0)
	sendDuringOutage(t, c, l, 2, 1)
	co.renew() // still down: nothing lands, nothing is lost
	c.setDown(false)
	co.renew()
	if got := c.msgs["box@example.com"]; got != 2 {
		t.Fatalf("the database counts %d messages after the renewal, want the 2 sent on the share", got)
	}
	if len(c.charges) != 1 || c.charges[0].RateDebt <= 0 || c.charges[0].RateDebt > 2*time.Second {
		t.Fatalf("charges %+v, want one whose rate debt is the two messages' second at most", c.charges)
	}
	co.renew()
	if n := c.count("Charge"); n != 1 {
		t.Fatalf("%d charges, want 1: a landed charge is not repeated", n)
	}
}

// TestConnSlotsAdoptedAfterAnOutage: connections opened on an instance's
// share during an outage get leases once the database is back, so that
// the others cannot open the whole cap beside them; when the shares add
// up to more than the cap, everyone waits until enough of them closed.
func TestConnSlotsAdoptedAfterAnOutage(t *testing.T) {
	c := newMemCoord()
	a, b := instance(t, c, "a", 2, nil), instance(t, c, "b", 2, nil)
	sa, sb := a.ConnSlots("smtp:x", 2), b.ConnSlots("smtp:x", 2)
	c.setDown(true)
	releaseA := mustAcquire(t, sa) // its share: 2/2
	c.setDown(false)
	a.renew()
	afterRetry(b)
	releaseB := mustAcquire(t, sb)
	mustBeBusy(t, sb, "a's connection of the outage holds the other slot")
	releaseA()
	awaitFree(t, sb)
	releaseB()

	// Three instances on a cap of 1: each had a share of 1.
	c2 := newMemCoord()
	cos := []*Coordination{instance(t, c2, "a", 3, nil), instance(t, c2, "b", 3, nil), instance(t, c2, "c", 3, nil)}
	c2.setDown(true)
	var releases []func()
	for _, co := range cos[:2] {
		releases = append(releases, mustAcquire(t, co.ConnSlots("smtp:y", 1)))
	}
	c2.setDown(false)
	for _, co := range cos[:2] {
		co.renew()
	}
	afterRetry(cos[2])
	sc := cos[2].ConnSlots("smtp:y", 1)
	mustBeBusy(t, sc, "two connections of the outage are open")
	releases[0]()
	waitFor(t, func() bool { n, _ := c2.SlotsInUse(t.Context(), "smtp:y", time.Now()); return n == 1 })
	mustBeBusy(t, sc, "one connection of the outage is open, the cap is 1")
	releases[1]()
	awaitFree(t, sc)
}

// TestConnSlotsLapsedLeasesAreTakenBack: an instance whose renewals did
// not reach the database for longer than the lease (a partition, a slow
// database) may find its slots taken over; once it reaches the database
// again it leases its open connections anew, beyond the cap, so that
// nobody else opens more until they close.
func TestConnSlotsLapsedLeasesAreTakenBack(t *testing.T) {
	c := newMemCoord()
	set := CoordinationSettings{Instances: 2, RetryAfter: 20 * time.Millisecond, SlotLease: 200 * time.Millisecond}
	set.Owner = "a"
	a := NewCoordination(c, set)
	set.Owner = "b"
	b := NewCoordination(c, set)
	set.Owner = "c"
	cc := NewCoordination(c, set)
	sa, sb, sc := a.ConnSlots("smtp:x", 1), b.ConnSlots("smtp:x", 1), cc.ConnSlots("smtp:x", 1)
	releaseA := mustAcquire(t, sa)
	c.setCut("a", true)
	a.renew()
	time.Sleep(250 * time.Millisecond) // a's lease lapses
	releaseB := mustAcquire(t, sb)
	c.setCut("a", false)
	a.renew()
	releaseB()
	waitFor(t, func() bool { return c.held("smtp:x", "b") == 0 })
	mustBeBusy(t, sc, "a's connection is still open")
	releaseA()
	awaitFree(t, sc)
}

// TestRenewalIgnoresTheRetryWindow: leases are shorter than the time a
// failed database is left alone (RetryAfter), so the renewal tries every
// time: one failed call must not cost the instance its leases.
func TestRenewalIgnoresTheRetryWindow(t *testing.T) {
	c := newMemCoord()
	co := NewCoordination(c, CoordinationSettings{Owner: "a", Instances: 2, RetryAfter: time.Hour})
	s := co.ConnSlots("smtp:x", 2)
	mustAcquire(t, s)
	c.setDown(true)
	co.renew()
	c.setDown(false)
	before := c.count("ExtendSlots")
	co.renew()
	if c.count("ExtendSlots") != before+1 {
		t.Fatal("the renewal was skipped inside the retry window")
	}
	if d, _ := co.Degraded(); d {
		t.Fatal("a renewal that reached the database did not end the degraded state")
	}
}

// TestConnSlotsChurnThroughOutagesLeaksNothing: connections open and
// close while the database comes and goes and the renewal runs; once
// they are all closed and the database is back, the instance holds no
// slot in it (nothing leaked by adoption, lapses or failed releases) and
// never held more leases than open connections.
func TestConnSlotsChurnThroughOutagesLeaksNothing(t *testing.T) {
	c := newMemCoord()
	co := NewCoordination(c, CoordinationSettings{Owner: "a", Instances: 2, RetryAfter: 5 * time.Millisecond, SlotLease: 60 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go co.Run(ctx)
	var open atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the database comes and goes
		for i := 0; ; i++ {
			select {
			case <-stop:
				c.setDown(false)
				return
			case <-time.After(7 * time.Millisecond):
				c.setDown(i%3 == 0)
			}
		}
	})
	for range 6 {
		wg.Go(func() {
			s := co.ConnSlots("smtp:x", 3)
			for range 60 {
				release, err := s.TryAcquire(ctx)
				if err != nil {
					time.Sleep(time.Millisecond) // a waiter's poll
					continue
				}
				open.Add(1)
				if held := c.held("smtp:x", "a"); held > 3+int(open.Load()) {
					t.Errorf("%d leases for %d open connections", held, open.Load())
				}
				time.Sleep(2 * time.Millisecond) // a message
				open.Add(-1)
				release()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	waitFor(t, func() bool { return c.held("smtp:x", "a") == 0 })
}

// TestConnSlotsAcquiredWithoutAnswerAreFreed: an acquisition whose answer
// was lost (the connection to the database broke after the commit) may
// have leased a slot the instance does not know it holds; the renewal
// would keep it for ever. The key is adopted again (exactly the
// connections the instance has open) once the database answers.
func TestConnSlotsAcquiredWithoutAnswerAreFreed(t *testing.T) {
	c := newMemCoord()
	co := instance(t, c, "a", 2, nil)
	s := co.ConnSlots("smtp:x", 2)
	release := mustAcquire(t, s)
	c.setLoseReplies(true)
	mustBeBusy(t, s, "the share of 2/2 is held; the lost answer leased a second slot")
	c.setLoseReplies(false)
	release()
	afterRetry(co)
	co.renew()
	waitFor(t, func() bool { return c.held("smtp:x", "a") == 0 })
}
