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
// RetryAfter. Once it answers again, what the instance sent on its share
// is charged to the shared counts and the connections it opened get
// leases (recover.go).
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
	probing       atomic.Bool // a caller tries the failed database again
	stopped       atomic.Bool // the instance gave its slots up (Run ended)
	fallbacks     atomic.Uint64
	bugs          atomic.Uint64
	bugLogged     atomic.Int64 // when a bug was last logged (Unix ns)

	slotsMu sync.Mutex
	keys    map[string]*keySlots // the connection slots of each key in this process
	// recovering hints that some key holds slots without a lease in the
	// database (taken on the share, or whose lease may have lapsed).
	recovering atomic.Bool
	// renewedUntil is when the leases the last renewal reached end (Run's
	// goroutine only): a renewal that succeeds after it finds them lapsed.
	renewedUntil time.Time

	debtMu sync.Mutex
	debts  map[string]*debt // what was sent on the share, by account key
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
	// SlotLease is how long a connection slot outlives a dead instance;
	// default 5s, renewed every second (README "Several instances").
	SlotLease time.Duration
}

// DefaultSlotLease is SlotLease's default: a dead instance's connection
// slots are free again within 5 seconds; a live one renews them every
// second and takes them back if they lapsed while it could not (renew).
const DefaultSlotLease = 5 * time.Second

// NewCoordination returns the instance's coordination through c.
func NewCoordination(c store.Coordinator, set CoordinationSettings) *Coordination {
	co := &Coordination{
		coord: c, owner: set.Owner, instances: max(set.Instances, 1), log: set.Log,
		callTimeout: set.CallTimeout, retryAfter: set.RetryAfter, slotLease: set.SlotLease,
		keys: map[string]*keySlots{}, debts: map[string]*debt{},
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
		co.slotLease = DefaultSlotLease
	}
	// Every lease handed out from now on ends after this.
	co.renewedUntil = time.Now().Add(co.slotLease)
	return co
}

// Owner is the instance's name in the database.
func (co *Coordination) Owner() string { return co.owner }

// Instances is the expected instance count.
func (co *Coordination) Instances() int { return co.instances }

// Degraded reports whether the instance runs on its own share of the
// limits (the database was unreachable at the last try), and why. It
// never asks the database: /health/ready and the metrics read it.
func (co *Coordination) Degraded() (bool, error) {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.degraded.Load(), co.lastErr
}

// Fallbacks counts the reservations and slots taken on the instance's
// own share because the database was unreachable (or a call failed).
func (co *Coordination) Fallbacks() uint64 { return co.fallbacks.Load() }

// Errors counts the calls that failed although the database answered: a
// bug (a constraint, a missing function), logged, never an outage.
func (co *Coordination) Errors() uint64 { return co.bugs.Load() }

// call runs one database call for a caller who waits for it until ctx
// ends, and classifies how it ended:
//   - answered (nil or a *store.Refusal): the database is reachable;
//   - the caller gave up (ctx ended): that says nothing of the database;
//     ctx's error is returned;
//   - unreachable (store.ErrUnavailable): the instance goes on with its
//     share for RetryAfter (errUseFallback);
//   - anything else is a bug: logged and counted, and this call uses the
//     share (errUseFallback) while the next ones try the database again.
//
// While the instance is degraded no call is made within RetryAfter, and
// after it one caller at a time tries the database while the others use
// the share at once: a database that stopped answering costs one caller
// CallTimeout, not every one.
func (co *Coordination) call(ctx context.Context, fn func(ctx context.Context) error) error {
	probe, ok := co.admit()
	if !ok {
		co.fallbacks.Add(1)
		return errUseFallback
	}
	if probe {
		defer co.probing.Store(false)
	}
	return co.classify(ctx, co.run(ctx, fn))
}

// admit says whether a call may go to the database now, and whether it
// is the one probe of a failed database.
func (co *Coordination) admit() (probe, ok bool) {
	if co.stopped.Load() {
		return false, false
	}
	if !co.degraded.Load() {
		return false, true
	}
	co.mu.Lock()
	wait := time.Now().Before(co.degradedUntil)
	co.mu.Unlock()
	if wait || !co.probing.CompareAndSwap(false, true) {
		return false, false
	}
	return true, true
}

// run calls fn under CallTimeout.
func (co *Coordination) run(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, co.callTimeout)
	defer cancel()
	return fn(ctx)
}

// classify is call's verdict on err, the result of a call made for a
// caller waiting until ctx ends.
func (co *Coordination) classify(ctx context.Context, err error) error {
	var refusal *store.Refusal
	switch {
	case err == nil, errors.As(err, &refusal):
		co.healthy()
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, store.ErrUnavailable):
		co.failed(err)
	default:
		co.healthy() // it answered
		co.bug(err)
	}
	co.fallbacks.Add(1)
	return errUseFallback
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

// bugEvery spaces the log lines of bugs: one a message would flood it.
const bugEvery = 10 * time.Second

// bug logs and counts a call that failed although the database answered.
func (co *Coordination) bug(err error) {
	n := co.bugs.Add(1)
	now := time.Now().UnixNano()
	last := co.bugLogged.Load()
	if now-last < int64(bugEvery) || !co.bugLogged.CompareAndSwap(last, now) {
		return
	}
	co.log.Error("shared limits: a database call failed although the database answered (a bug: please report it); the call used this instance's share",
		"error", err, "errors_so_far", n)
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
