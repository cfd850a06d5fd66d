package postgres

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// TestCoordinatorAgreesWithLocalLimits replays one random history of
// reservations, recipients and releases on the coordinator and on the
// local limiter (internal/limits) and requires the same decisions, the
// same RetryAt (to the microsecond: x/time/rate computes in floating
// point) and the same usage. The rate token is given back the way both
// do it: at the instant of the reservation (the local limiter returns it
// at no later time, x/time/rate's CancelAt).
func TestCoordinatorAgreesWithLocalLimits(t *testing.T) {
	cases := []struct {
		name      string
		l         store.SharedLimits
		refusedBy []string // the limits the history must run into
	}{
		{"rate", store.SharedLimits{PerMinute: 7, Burst: 3}, []string{store.RefusedRate}},
		{"daily", store.SharedLimits{DailyMsgs: 20, DailyRcpts: 25},
			[]string{store.RefusedDailyMsgs, store.RefusedDailyRcpts}},
		{"all", store.SharedLimits{PerMinute: 2, Burst: 2, DailyMsgs: 30, DailyRcpts: 50},
			[]string{store.RefusedRate, store.RefusedDailyMsgs, store.RefusedDailyRcpts}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &replay{t: t, c: openCoordinator(t), l: tc.l, rnd: rand.New(rand.NewPCG(1, uint64(i))),
				local: limits.NewAccountLimits(tc.l.PerMinute, tc.l.Burst, tc.l.DailyMsgs, tc.l.DailyRcpts, 0),
				now:   time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC), refusals: map[string]int{}}
			granted := 0
			for range 400 {
				r.step()
				granted += r.reserve()
				r.releaseSome()
				r.compareUsage()
			}
			t.Logf("%d granted, refused %v, RetryAt differs by %s at most", granted, r.refusals, r.skew)
			if granted < 50 {
				t.Fatalf("only %d reservations granted: the history tests little", granted)
			}
			for _, kind := range tc.refusedBy {
				if r.refusals[kind] < 5 {
					t.Fatalf("refused by %s %d times: the history tests little", kind, r.refusals[kind])
				}
			}
		})
	}
}

// replay is one history on both limiters.
type replay struct {
	t     *testing.T
	c     store.Coordinator
	local *limits.AccountLimits
	l     store.SharedLimits
	rnd   *rand.Rand
	now   time.Time
	kept  []*both // granted and not released

	refusals map[string]int // by kind
	skew     time.Duration  // the largest RetryAt difference seen
}

// both is one message's reservation on both limiters.
type both struct {
	at    time.Time
	local limits.Reservation
	g     *store.Grant
	rcpts int
}

// step moves time on: not at all, by seconds or by quarter-hours, with
// odd nanoseconds so that no step lands on a limit's boundary, where
// floating point could tip the local decision.
func (r *replay) step() {
	switch r.rnd.IntN(4) {
	case 0:
	case 1, 2:
		r.now = r.now.Add(time.Duration(r.rnd.Int64N(int64(40 * time.Second))))
	default:
		r.now = r.now.Add(time.Duration(r.rnd.Int64N(int64(3 * time.Hour))))
	}
	r.now = r.now.Add(time.Duration(1 + r.rnd.IntN(999)))
}

// reserve reserves a message and a few recipients on both, sometimes
// giving everything back at once; it returns 1 when the message was
// granted.
func (r *replay) reserve() int {
	t := r.t
	lres, lerr := r.local.Reserve(r.now)
	g, serr := r.c.ReserveMessage(t.Context(), "k", r.now, r.l)
	r.agree("message", lerr, serr)
	if lerr != nil {
		return 0
	}
	b := &both{at: r.now, local: lres, g: g}
	for range r.rnd.IntN(4) {
		lerr, serr := lres.AddRcpt(r.now), r.c.ReserveRcpt(t.Context(), "k", g, r.now, r.l)
		r.agree("recipient", lerr, serr)
		if lerr == nil {
			b.rcpts++
		}
	}
	if r.rnd.IntN(5) == 0 {
		r.cancel(b)
	} else {
		r.kept = append(r.kept, b)
	}
	return 1
}

// releaseSome gives back, now and then, a recipient of a kept
// reservation or, without a rate limit (whose token only the coordinator
// gives back later), the whole of it.
func (r *replay) releaseSome() {
	if len(r.kept) == 0 || r.rnd.IntN(3) != 0 {
		return
	}
	i := r.rnd.IntN(len(r.kept))
	b := r.kept[i]
	if r.now.Sub(b.at) > 12*time.Hour {
		r.kept = append(r.kept[:i], r.kept[i+1:]...)
		return
	}
	if r.l.PerMinute == 0 {
		r.cancel(b)
		r.kept = append(r.kept[:i], r.kept[i+1:]...)
		return
	}
	if b.rcpts > 0 {
		b.local.DropRcpt()
		b.rcpts--
		if err := r.c.Release(r.t.Context(), "k", b.g, 0, 1, r.now, r.l); err != nil {
			r.t.Fatalf("Release: %v", err)
		}
	}
}

func (r *replay) cancel(b *both) {
	b.local.Cancel(r.now)
	if err := r.c.Release(r.t.Context(), "k", b.g, 1, b.rcpts, r.now, r.l); err != nil {
		r.t.Fatalf("Release: %v", err)
	}
}

// agree requires the same decision from the local limiter (lerr) and the
// coordinator (serr).
func (r *replay) agree(what string, lerr, serr error) {
	r.t.Helper()
	le, refusedLocally := limits.IsLimit(lerr)
	if lerr != nil && !refusedLocally {
		r.t.Fatalf("local %s at %s: %v", what, r.now, lerr)
	}
	se, refusedShared := errors.AsType[*store.Refusal](serr)
	if serr != nil && !refusedShared {
		r.t.Fatalf("shared %s at %s: %v", what, r.now, serr)
	}
	switch {
	case refusedLocally != refusedShared:
		r.t.Fatalf("%s at %s: local %v, shared %v", what, r.now, lerr, serr)
	case !refusedLocally:
		return
	case le.Kind != se.Kind || le.Limit != se.Limit:
		r.t.Fatalf("%s at %s: local refused by %s (%d), shared by %s (%d)", what, r.now, le.Kind, le.Limit, se.Kind, se.Limit)
	case le.RetryAt.Sub(se.RetryAt).Abs() > time.Microsecond:
		r.t.Fatalf("%s at %s refused by %s: local retry at %s, shared at %s", what, r.now, le.Kind, le.RetryAt, se.RetryAt)
	}
	r.refusals[se.Kind]++
	r.skew = max(r.skew, le.RetryAt.Sub(se.RetryAt).Abs())
}

// compareUsage requires the same share of each daily quota.
func (r *replay) compareUsage() {
	r.t.Helper()
	msgs, rcpts, err := r.c.Usage(r.t.Context(), "k", r.now)
	if err != nil {
		r.t.Fatalf("Usage: %v", err)
	}
	local := r.local.Usage(r.now)
	if r.l.DailyMsgs > 0 && local[limits.KindDailyMessages] != float64(msgs)/float64(r.l.DailyMsgs) {
		r.t.Fatalf("at %s: local message share %v, shared %d of %d", r.now, local[limits.KindDailyMessages], msgs, r.l.DailyMsgs)
	}
	if r.l.DailyRcpts > 0 && local[limits.KindDailyRcpts] != float64(rcpts)/float64(r.l.DailyRcpts) {
		r.t.Fatalf("at %s: local recipient share %v, shared %d of %d", r.now, local[limits.KindDailyRcpts], rcpts, r.l.DailyRcpts)
	}
}
