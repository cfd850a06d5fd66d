// Package queue is the relay's store-and-forward queue: a transport that
// stores (a `delivery = "queue"` listener answers 250 once the message is
// durable in the store) and workers that deliver later through the
// account's direct transport. The semantics are Postfix's: retries on a
// schedule, per-recipient deferral, a delivery-status notification (RFC
// 3464) after the queue's max_lifetime or on a 5xx, never one to the null
// reverse-path and never one about a notification (no loops).
package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Defaults for the zero values of Config.
const (
	DefaultWorkers = 8
	DefaultLease   = 5 * time.Minute
	DefaultPoll    = time.Second
	// DefaultDelayWarning: RFC 3461 leaves the time to the MTA; Postfix's
	// delay_warning_time is off by default, but NOTIFY=DELAY asks for it.
	DefaultDelayWarning = 4 * time.Hour
)

// storeTimeout bounds the store writes that record an attempt: they run
// even while Stop abandons deliveries, so that a finished delivery is not
// repeated after a restart.
const storeTimeout = 30 * time.Second

// Route is how the queue reaches an account now (from the current
// configuration).
type Route struct {
	Transport   transport.Transport // the account's direct transport (SMTP today)
	Concurrency int                 // max deliveries in flight for the account (its pool cap); 0 = no cap
	Release     func()              // called when the delivery is done (lets go of the configuration); may be nil
	// Unavailable, when the resolver answers false, is the reply recorded
	// for the waiting recipients ("" : the account is not configured).
	Unavailable string
}

// Resolver returns the route to an account; false when the account is not
// configured (removed by a reload).
type Resolver func(account string) (Route, bool)

// Notifier builds a delivery-status notification for failed recipients.
// ok false: no notification is wanted (nothing is queued, no error).
type Notifier func(orig *store.Envelope, header []byte, failed []Failure, now time.Time) (msg []byte, ok bool, err error)

// Failure is one recipient a delivery-status notification reports.
type Failure struct {
	Rcpt        string // the recipient as sent (SMTP path)
	ORcpt       string // its ORCPT parameter (RFC 3461), "" when none
	Status      string // RFC 3463 status code, e.g. "5.1.1" or "4.4.7"
	Reply       string // the provider's last reply line, "" when there was none
	Reason      string // the queue's own reason (expiry), "" when Reply says it all
	LastAttempt time.Time

	// Action is the RFC 3464 action: "" (failed), "delayed" or "relayed";
	// one notification reports one action.
	Action string
	// WillRetryUntil is when a delayed recipient fails (its message's
	// expiry); zero otherwise.
	WillRetryUntil time.Time
}

// Config is the queue's reloadable configuration.
type Config struct {
	// RetrySchedule is the wait after each failed attempt: the first
	// failure waits RetrySchedule[0], and so on; the last step repeats.
	RetrySchedule []time.Duration
	// MaxLifetime is how long a message may stay queued, counted from
	// its arrival; pending recipients then fail with 4.4.7. Like
	// Postfix's maximal_queue_lifetime it applies to every queued
	// message, those queued before a reload changed it too (the stored
	// Expires records the lifetime in force at arrival).
	MaxLifetime time.Duration
	// Workers is the number of deliveries in flight at most (0: DefaultWorkers).
	Workers int
	// MaxBouncesPerHour caps notifications per envelope sender over the
	// last hour, counted by this instance (0: no cap).
	MaxBouncesPerHour int
	// DelayWarning is how long a recipient whose NOTIFY includes DELAY
	// may stay undelivered before its sender gets one "delayed"
	// notification (0: DefaultDelayWarning).
	DelayWarning time.Duration
	// Owner names this instance's leases; it is fixed at New.
	Owner string
	// Lease is how long a claim lasts; it is renewed every Lease/3 while
	// a delivery runs (0: DefaultLease).
	Lease time.Duration
	// Poll is the longest wait between claims when idle (0: DefaultPoll);
	// Kick claims at once.
	Poll time.Duration
	// HistorySubjects keeps each message's decoded Subject in its history
	// record (store { history_subjects }); off, none is stored.
	HistorySubjects bool
}

// Validate reports the first setting the queue cannot work with.
func (c Config) Validate() error {
	switch {
	case c.Owner == "":
		return errors.New("queue: Owner (the lease owner) is empty")
	case len(c.RetrySchedule) == 0:
		return errors.New("queue: the retry schedule is empty")
	case c.MaxLifetime <= 0:
		return errors.New("queue: max_lifetime must be positive")
	case c.Workers < 0, c.MaxBouncesPerHour < 0, c.Lease < 0, c.Poll < 0, c.DelayWarning < 0:
		return errors.New("queue: workers, bounce cap, lease, poll and delay warning must not be negative")
	}
	for i, d := range c.RetrySchedule {
		if d <= 0 {
			return fmt.Errorf("queue: retry schedule step %d is %s; steps must be positive", i+1, d)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	if c.DelayWarning == 0 {
		c.DelayWarning = DefaultDelayWarning
	}
	c.RetrySchedule = append([]time.Duration(nil), c.RetrySchedule...)
	return c
}

// expires is when a queued message's pending recipients fail: its
// arrival plus the max_lifetime in force now.
func (c Config) expires(m *store.Claimed) time.Time { return m.Received.Add(c.MaxLifetime) }

// retryAfter is the wait after a failed attempt when attempts attempts
// had been made before it.
func (c Config) retryAfter(attempts int) time.Duration {
	return c.RetrySchedule[min(max(attempts, 0), len(c.RetrySchedule)-1)]
}

// Queue stores messages and delivers them.
type Queue struct {
	st      store.Store
	resolve Resolver
	notify  Notifier
	log     hclog.Logger
	m       *metrics
	now     func() time.Time // the clock (tests replace it before Start)
	kick    chan struct{}
	dirty   chan struct{}
	// claimable is set when the store may hold due messages that no
	// claim has returned yet; a claim that leaves none clears it, so
	// that a finished delivery (which wakes the scheduler) costs the
	// store no empty claim.
	claimable atomic.Bool
	bounces   *bounceRate
	// courtesyRate caps the notices a sender asked for besides failures
	// (relayed, delayed) by the same hourly cap, counted apart: they must
	// never use up the budget of failure notices.
	courtesyRate *bounceRate

	mu      sync.Mutex
	cfg     Config
	running int
	fresh   int // worker slots reserved for messages being enqueued (fresh.go)
	// freshWG counts those reservations until they are placed or
	// cancelled: Stop waits for them before it returns the backlog.
	freshWG sync.WaitGroup
	// backlogReturned is set once Stop returned the backlog: a message
	// whose handover ends later is given back at once (fresh.start).
	backlogReturned bool
	// handover lets new messages go straight to a worker (fresh.go);
	// tests of the claim path turn it off.
	handover bool
	accounts map[string]*account
	backlog  []*lease // claimed, waiting for a free slot of their account
	// held are the IDs this instance holds a lease on (running or in the
	// backlog): a claim that returns one of them again (its lease ran out
	// while the store could not renew it) is dropped, so that one
	// instance never delivers a message twice at once.
	held     map[string]bool
	started  bool
	stopping bool
	// claimFailing is set while Claim fails (logged once per outage).
	claimFailing bool

	workCtx     context.Context // deliveries; cancelled when Stop abandons them
	workCancel  context.CancelFunc
	schedCancel context.CancelFunc
	schedDone   chan struct{}
	statsDone   chan struct{}
	workers     sync.WaitGroup
}

// New returns a stopped queue. notify may be nil (no notifications are
// sent; failures are still recorded); reg may be nil.
func New(st store.Store, resolve Resolver, notify Notifier, cfg Config, log hclog.Logger, reg prometheus.Registerer) (*Queue, error) {
	if st == nil || resolve == nil {
		return nil, errors.New("queue: a store and a resolver are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	q := &Queue{
		st:      st,
		resolve: resolve,
		notify:  notify,
		log:     log,
		now:     time.Now,
		kick:    make(chan struct{}, 1),
		dirty:   make(chan struct{}, 1),
		bounces: newBounceRate(),

		courtesyRate: newBounceRate(),
		cfg:          cfg.withDefaults(),
		accounts:     map[string]*account{},
		handover:     true,
	}
	q.m = newMetrics(reg, q)
	return q, nil
}

// SetConfig applies a reloaded configuration to later claims and attempts.
// An invalid configuration is logged and ignored; Owner cannot change.
func (q *Queue) SetConfig(cfg Config) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if cfg.Owner != q.cfg.Owner {
		if cfg.Owner != "" {
			q.log.Warn("the queue's lease owner cannot change while it runs; keeping the old one", "owner", q.cfg.Owner)
		}
		cfg.Owner = q.cfg.Owner
	}
	if err := cfg.Validate(); err != nil {
		q.log.Error("queue configuration refused; keeping the previous one", "error", err)
		return
	}
	q.cfg = cfg.withDefaults()
	q.Kick()
}

func (q *Queue) config() Config {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cfg
}

// Kick makes the scheduler claim due messages now (a new message, an
// operator's retry, a reload).
func (q *Queue) Kick() {
	q.claimable.Store(true)
	q.wake()
}

// wake makes the scheduler look at its backlog and, when the store may
// hold due messages it has not claimed (claimable), claim them.
func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// changed asks for the queue metrics to be refreshed soon.
func (q *Queue) changed() {
	select {
	case q.dirty <- struct{}{}:
	default:
	}
}

// Start releases the leases a previous run of this instance left behind
// and starts the scheduler. ctx bounds the queue's whole life: when it is
// cancelled, deliveries in flight are abandoned as by Stop. Start works
// once; later calls do nothing.
func (q *Queue) Start(ctx context.Context) {
	q.mu.Lock()
	if q.started {
		q.mu.Unlock()
		return
	}
	q.started = true
	owner := q.cfg.Owner
	q.workCtx, q.workCancel = context.WithCancel(ctx)
	var schedCtx context.Context
	schedCtx, q.schedCancel = context.WithCancel(q.workCtx)
	q.schedDone = make(chan struct{})
	q.statsDone = make(chan struct{})
	q.mu.Unlock()

	if err := q.st.ReleaseLeases(ctx, owner); err != nil {
		q.storeError("release_leases")
		q.log.Warn("could not release the leases of the previous run; they expire instead", "error", err)
	}
	go q.schedule(schedCtx)
	go q.refreshStats(schedCtx)
}

// Stop stops claiming and waits for the deliveries in flight until ctx is
// done; then it abandons them (their transports see their context
// cancelled, nothing is recorded, and their leases expire or are released
// by the next Start) and returns ctx's error. Stored messages are never
// lost: a message is removed only by the Finish of a completed attempt.
func (q *Queue) Stop(ctx context.Context) error {
	q.mu.Lock()
	if !q.started || q.stopping {
		q.mu.Unlock()
		return nil
	}
	q.stopping = true
	q.mu.Unlock()

	q.schedCancel()
	<-q.schedDone
	<-q.statsDone

	done := make(chan struct{})
	go func() {
		// Messages being handed over when the stop began are placed
		// (in the backlog, as the queue is stopping) before the
		// backlog is returned.
		q.freshWG.Wait()
		q.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		q.log.Warn("stop deadline reached: abandoning deliveries in flight; they will be retried")
	}
	q.workCancel()
	q.returnBacklog(ctx, err == nil)
	return err
}

// returnBacklog gives the leased messages no worker took (claimed, or
// handed over as they arrived) back to the store. Only when no delivery
// was abandoned may every lease of this owner be released at once;
// otherwise each waiting message is given back by itself, and the
// abandoned deliveries keep their leases until they expire (or the next
// Start releases them): they may have reached the provider.
func (q *Queue) returnBacklog(ctx context.Context, clean bool) {
	q.mu.Lock()
	held := q.backlog
	q.backlog = nil
	q.backlogReturned = true
	owner := q.cfg.Owner
	q.mu.Unlock()
	for _, l := range held {
		l.end()
	}
	if len(held) == 0 {
		return
	}
	if clean {
		if err := q.st.ReleaseLeases(ctx, owner); err != nil {
			q.storeError("release_leases")
			q.log.Warn("could not release the leases of messages not yet started; they expire instead", "count", len(held), "error", err)
		}
		return
	}
	// ctx has ended (the stop deadline passed): a moment more to record
	// that these were not attempted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	now := q.now()
	for _, l := range held {
		res := store.Result{At: now, Reply: "the relay stopped before delivering it", NextAttempt: now, Counted: false}
		if err := q.st.Finish(ctx, l.c.ID, owner, res); err != nil {
			q.finishFailed(l.c, err)
		}
	}
}

func (q *Queue) storeError(op string) { q.m.storeErrors.WithLabelValues(op).Inc() }
