package limits

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Coordination is one instance's link to the limits every instance of the
// relay shares through the database (README "Several instances"): account
// limits (SharedLimits) and per-mailbox connection slots (ConnSlots).
//
// When the database cannot be reached the instance goes on alone, on its
// own limits divided by the expected instance count, so that the
// instances together stay within the provider's (README "Failure modes");
// it says so in the log, in /health/ready and in
// oauthrelay_shared_limits_degraded, and tries the database again after
// RetryAfter.
type Coordination struct {
	coord     store.Coordinator
	owner     string
	instances int
	log       hclog.Logger
	// CallTimeout bounds one call to the database; RetryAfter is how long
	// a failed database is left alone before it is tried again; SlotLease
	// is how long a connection slot outlives its instance.
	callTimeout, retryAfter, slotLease time.Duration

	mu            sync.Mutex
	degradedUntil time.Time
	lastErr       error
	degraded      atomic.Bool
	fallbacks     atomic.Uint64

	slotsMu sync.Mutex
	slots   map[string]map[*ConnSlots]struct{} // by key: gates to tell about contention
	// unreleased are slots whose release did not reach the database.
	unreleased []slotRef
}

// CoordinationSettings configure NewCoordination.
type CoordinationSettings struct {
	// Owner names this instance in the database (unique per process).
	Owner string
	// Instances is the number of instances expected to run: while the
	// database is unreachable each instance keeps 1/Instances of every
	// limit. At least 1.
	Instances   int
	Log         hclog.Logger
	CallTimeout time.Duration // default 2s
	RetryAfter  time.Duration // default 5s
	SlotLease   time.Duration // default 15s
}

// NewCoordination returns the instance's coordination through c.
func NewCoordination(c store.Coordinator, set CoordinationSettings) *Coordination {
	co := &Coordination{
		coord: c, owner: set.Owner, instances: max(set.Instances, 1), log: set.Log,
		callTimeout: set.CallTimeout, retryAfter: set.RetryAfter, slotLease: set.SlotLease,
		slots: map[string]map[*ConnSlots]struct{}{},
	}
	if co.log == nil {
		co.log = hclog.NewNullLogger()
	}
	if co.callTimeout <= 0 {
		co.callTimeout = 2 * time.Second
	}
	if co.retryAfter <= 0 {
		co.retryAfter = 5 * time.Second
	}
	if co.slotLease <= 0 {
		co.slotLease = 15 * time.Second
	}
	return co
}

// Owner is the instance's name in the database.
func (co *Coordination) Owner() string { return co.owner }

// Instances is the expected instance count.
func (co *Coordination) Instances() int { return co.instances }

// Degraded reports whether the instance runs on its own share of the
// limits (the database was unreachable at the last try), and why.
func (co *Coordination) Degraded() (bool, error) {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.degraded.Load(), co.lastErr
}

// Fallbacks counts the reservations and slots taken on the instance's
// own share because the database was unreachable.
func (co *Coordination) Fallbacks() uint64 { return co.fallbacks.Load() }

// call runs one database call unless the database failed within the
// last RetryAfter; errUseFallback tells the caller to go on alone.
func (co *Coordination) call(fn func(ctx context.Context) error) error {
	if co.degraded.Load() {
		co.mu.Lock()
		wait := time.Now().Before(co.degradedUntil)
		co.mu.Unlock()
		if wait {
			co.fallbacks.Add(1)
			return errUseFallback
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), co.callTimeout)
	defer cancel()
	err := fn(ctx)
	var refusal *store.Refusal
	switch {
	case err == nil, errors.As(err, &refusal):
		co.healthy()
		return err
	default:
		co.failed(err)
		co.fallbacks.Add(1)
		return errUseFallback
	}
}

var errUseFallback = errors.New("shared limits unavailable")

func (co *Coordination) healthy() {
	if !co.degraded.Load() {
		return
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.degraded.Swap(false) {
		co.lastErr = nil
		co.log.Info("shared limits: the database is reachable again; limits are shared across instances again")
	}
}

func (co *Coordination) failed(err error) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.degradedUntil = time.Now().Add(co.retryAfter)
	co.lastErr = err
	if !co.degraded.Swap(true) {
		co.log.Error("shared limits: the database is unreachable; this instance goes on with its share of every limit",
			"share", "1/"+strconv.Itoa(co.instances), "error", err)
	}
}

// SharedLimits is an account's Limiter whose counts every instance shares
// (store.Coordinator); while the database is unreachable it reserves from
// fallback, the limits divided by the expected instance count.
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
	var g *store.Grant
	err := s.co.call(func(ctx context.Context) (err error) {
		g, err = s.co.coord.ReserveMessage(ctx, s.key, now, s.lim)
		return err
	})
	switch {
	case err == nil:
		return &sharedReservation{s: s, grant: g, msgs: 1}, nil
	case errors.Is(err, errUseFallback):
		return s.fallback.Reserve(now)
	default:
		return nil, limitError(err)
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
	err := s.co.call(func(ctx context.Context) (err error) {
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
	done  bool
}

func (r *sharedReservation) AddRcpt(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.s
	if s.maxRcpts > 0 && r.local+1 > s.maxRcpts {
		return &LimitError{Kind: KindMessageRcpts, Limit: s.maxRcpts}
	}
	if r.grant != nil && s.lim.DailyRcpts > 0 {
		err := s.co.call(func(ctx context.Context) error {
			return s.co.coord.ReserveRcpt(ctx, s.key, r.grant, now, s.lim)
		})
		switch {
		case err == nil:
			r.rcpts++
		case errors.Is(err, errUseFallback):
			// The database went away mid-message: the recipient is
			// counted nowhere rather than refused; the next message
			// reserves from the instance's share.
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
	if r.rcpts > 0 {
		r.rcpts--
		r.release(0, 1, time.Now())
	}
}

func (r *sharedReservation) Commit() {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
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
	if err := s.co.call(func(ctx context.Context) error {
		return s.co.coord.Release(ctx, s.key, r.grant, msgs, rcpts, now, s.lim)
	}); err != nil {
		s.co.log.Debug("shared limits: a share was not given back", "account", s.key, "error", err)
	}
}

var _ Limiter = (*SharedLimits)(nil)
