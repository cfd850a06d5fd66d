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
	err := co.classify(ctx, co.run(ctx, fn))
	if errors.Is(err, errUseFallback) {
		co.fallbacks.Add(1)
	}
	return err
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
