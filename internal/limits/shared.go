package limits

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// SharedLimits is an account's Limiter whose counts every instance shares
// (store.Coordinator); while the database is unreachable it reserves from
// fallback, the limits divided by the expected instance count, and what
// it sends there is charged to the shared counts once the database
// answers (debt.go), before the account's next reservation.
type SharedLimits struct {
	co       *Coordination
	key      string
	lim      store.SharedLimits
	maxRcpts int
	fallback *AccountLimits

	usageMu sync.Mutex
	usage   map[string]float64
	usageAt time.Time
}

// usageFresh is how long Usage answers from its last reading: metrics
// scrapes and health checks of many mailboxes must not each cost every
// mailbox a database round trip.
const usageFresh = 5 * time.Second

// NewSharedLimits returns the shared limits of one account (key: its
// address); nil when no limit is set.
func (co *Coordination) NewSharedLimits(key string, perMinute, burst, dailyMsgs, dailyRcpts, maxRcptsPerMessage int) *SharedLimits {
	if perMinute <= 0 && dailyMsgs <= 0 && dailyRcpts <= 0 && maxRcptsPerMessage <= 0 {
		return nil
	}
	if perMinute > 0 && burst <= 0 {
		burst = 1
	}
	n := co.instances
	return &SharedLimits{
		co: co, key: key, maxRcpts: maxRcptsPerMessage,
		lim:      store.SharedLimits{PerMinute: max(perMinute, 0), Burst: burst, DailyMsgs: max(dailyMsgs, 0), DailyRcpts: max(dailyRcpts, 0), BucketWidth: bucketSpan},
		fallback: NewAccountLimits(share(perMinute, n), share(burst, n), share(dailyMsgs, n), share(dailyRcpts, n), maxRcptsPerMessage),
	}
}

// share is an instance's part of a limit: at least 1 of a set limit, so
// that every instance can still send.
func share(limit, instances int) int {
	if limit <= 0 {
		return 0
	}
	return max(limit/instances, 1)
}

// Reserve implements Limiter.
func (s *SharedLimits) Reserve(now time.Time) (Reservation, error) {
	if s == nil {
		return noReservation{}, nil
	}
	if s.lim.PerMinute == 0 && s.lim.DailyMsgs == 0 && s.lim.DailyRcpts == 0 {
		// Only a per-message recipient cap: nothing to share.
		return &sharedReservation{s: s}, nil
	}
	ctx := context.Background()
	// What the instance sent on its share goes into the counts before
	// anything more is reserved from them.
	if err := s.co.settle(ctx, s.key); err != nil {
		return s.reserveOnShare(now)
	}
	var g *store.Grant
	err := s.co.call(ctx, func(ctx context.Context) (err error) {
		g, err = s.co.coord.ReserveMessage(ctx, s.key, now, s.lim)
		return err
	})
	switch {
	case err == nil:
		return &sharedReservation{s: s, grant: g, msgs: 1}, nil
	case errors.Is(err, errUseFallback):
		return s.reserveOnShare(now)
	default:
		return nil, limitError(err)
	}
}

// reserveOnShare reserves from the instance's share; what it sends is
// remembered, to be charged to the database once it answers (debt.go).
func (s *SharedLimits) reserveOnShare(now time.Time) (Reservation, error) {
	r, err := s.fallback.Reserve(now)
	if err != nil {
		return nil, err
	}
	return &shareReservation{Reservation: r, s: s, at: now}, nil
}

// InheritUsage makes l, which replaces old for the same account (a reload
// changed the account's limits), keep the quota old used: the counts of
// local limits, the share's counts of shared ones (the database keeps the
// shared counts by account, whatever the limits).
func InheritUsage(l, old Limiter) {
	switch n := l.(type) {
	case *AccountLimits:
		if o, ok := old.(*AccountLimits); ok {
			n.InheritUsage(o)
		}
	case *SharedLimits:
		if o, ok := old.(*SharedLimits); ok && n != nil && o != nil {
			n.fallback.InheritUsage(o.fallback)
		}
	}
}

// Usage implements Limiter: the shares of the daily quotas all instances
// used; the instance's own share while the database is unreachable.
func (s *SharedLimits) Usage(now time.Time) map[string]float64 {
	if s == nil {
		return nil
	}
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if s.usage != nil && now.Sub(s.usageAt) >= 0 && now.Sub(s.usageAt) < usageFresh {
		return s.usage
	}
	var msgs, rcpts int
	err := s.co.call(context.Background(), func(ctx context.Context) (err error) {
		msgs, rcpts, err = s.co.coord.Usage(ctx, s.key, now)
		return err
	})
	if err != nil {
		return s.fallback.Usage(now)
	}
	u := map[string]float64{}
	if s.lim.DailyMsgs > 0 {
		u[KindDailyMessages] = float64(msgs) / float64(s.lim.DailyMsgs)
	}
	if s.lim.DailyRcpts > 0 {
		u[KindDailyRcpts] = float64(rcpts) / float64(s.lim.DailyRcpts)
	}
	s.usage, s.usageAt = u, now
	return u
}

func limitError(err error) error {
	var r *store.Refusal
	if errors.As(err, &r) {
		return &LimitError{Kind: r.Kind, Limit: r.Limit, RetryAt: r.RetryAt}
	}
	return err
}

// sharedReservation is a message's share of an account's shared limits.
type sharedReservation struct {
	s     *SharedLimits
	grant *store.Grant // nil: only the per-message cap applies

	mu    sync.Mutex
	msgs  int // 1 while the message's share is held
	rcpts int // recipients counted in the database
	local int // recipients counted for the per-message cap
	// uncounted are recipients added while the database was unreachable:
	// charged to it once it answers if the message is sent.
	uncounted int
	done      bool
}

func (r *sharedReservation) AddRcpt(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.s
	if s.maxRcpts > 0 && r.local+1 > s.maxRcpts {
		return &LimitError{Kind: KindMessageRcpts, Limit: s.maxRcpts}
	}
	if r.grant != nil && s.lim.DailyRcpts > 0 {
		err := s.co.call(context.Background(), func(ctx context.Context) error {
			return s.co.coord.ReserveRcpt(ctx, s.key, r.grant, now, s.lim)
		})
		switch {
		case err == nil:
			r.rcpts++
		case errors.Is(err, errUseFallback):
			// The database went away mid-message: the recipient is not
			// refused; it is charged once the database answers (Commit),
			// and the next message reserves from the instance's share.
			r.uncounted++
		default:
			return limitError(err)
		}
	}
	r.local++
	return nil
}

func (r *sharedReservation) DropRcpt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || r.local == 0 {
		return
	}
	r.local--
	switch {
	case r.uncounted > 0:
		r.uncounted--
	case r.rcpts > 0:
		r.rcpts--
		r.release(0, 1, time.Now())
	}
}

func (r *sharedReservation) Commit() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.uncounted > 0 {
		r.s.co.owe(r.s.key, r.s.lim, r.grant.Bucket, time.Time{}, 0, r.uncounted)
	}
}

func (r *sharedReservation) Cancel(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	r.release(r.msgs, r.rcpts, now)
}

// release gives shares back; when the database is unreachable they stay
// counted (the safe side: the quota is used up a little early).
func (r *sharedReservation) release(msgs, rcpts int, now time.Time) {
	if r.grant == nil || msgs+rcpts == 0 {
		return
	}
	s := r.s
	if err := s.co.call(context.Background(), func(ctx context.Context) error {
		return s.co.coord.Release(ctx, s.key, r.grant, msgs, rcpts, now, s.lim)
	}); err != nil {
		s.co.log.Debug("shared limits: a share was not given back", "account", s.key, "error", err)
	}
}

// shareReservation is a message's reservation on the instance's share
// (the database was unreachable): sent, it is owed to the database.
type shareReservation struct {
	Reservation // of the share (*AccountLimits)
	s           *SharedLimits
	at          time.Time

	mu    sync.Mutex
	rcpts int
	done  bool
}

func (r *shareReservation) AddRcpt(now time.Time) error {
	err := r.Reservation.AddRcpt(now)
	if err == nil {
		r.mu.Lock()
		r.rcpts++
		r.mu.Unlock()
	}
	return err
}

func (r *shareReservation) DropRcpt() {
	r.Reservation.DropRcpt()
	r.mu.Lock()
	if !r.done && r.rcpts > 0 {
		r.rcpts--
	}
	r.mu.Unlock()
}

func (r *shareReservation) Commit() {
	r.Reservation.Commit()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	rcpts := r.rcpts
	if r.s.lim.DailyRcpts == 0 {
		rcpts = 0 // counted in the database only against a quota
	}
	r.s.co.owe(r.s.key, r.s.lim, bucketOf(r.at), r.at, 1, rcpts)
}

func (r *shareReservation) Cancel(now time.Time) {
	r.Reservation.Cancel(now)
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
}

var _ Limiter = (*SharedLimits)(nil)
