package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	vault "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/bounce"
	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/queue"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/seal"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// durable is the relay's durable state: the store, the queue that
// delivers from it and the writer of direct-mode history. It is opened
// once and kept across reloads; the store block itself changes only with a
// restart (a reload that changes it is refused and changes nothing).
type durable struct {
	settings storeSettings
	store    store.Store
	// owner names this instance in the store's leases (instanceID).
	owner   string
	queue   *queue.Queue
	history *historyWriter
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// queueStopped reports the queue's Stop (set by stopQueue).
	queueStopped chan error
	// sharedStore: the store is the shared database's, closed with it
	// (sharedDB) after the pools gave their connection slots back.
	sharedStore bool
	// degraded, with a shared database, is the shared limits' knowledge
	// of it (limits.Coordination.Degraded): while they know it is
	// unreachable, /health/ready does not ask it.
	degraded func() (bool, error)

	healthMu     sync.Mutex
	healthAt     time.Time
	healthStatus map[string]any
	healthUp     bool
}

// storeSettings are the store block's settings that need a restart.
type storeSettings struct {
	path, transitMount, transitKey string
	// postgres: the DSN reference as written (not its value), and the
	// rest of the postgres block.
	dsnRef, vaultCredentials, role string
	instances, maxConns            int
}

func storeSettingsOf(s *config.Store) storeSettings {
	if s == nil {
		return storeSettings{}
	}
	ss := storeSettings{path: s.Path}
	if s.Transit != nil {
		ss.transitMount, ss.transitKey = s.Transit.Mount, s.Transit.Key
	}
	if pg := s.Postgres; pg != nil {
		ss.dsnRef, ss.vaultCredentials, ss.role = pg.DSN.String(), pg.VaultCredentials, pg.Role
		if lit := pg.DSN.Literal(); lit != "" {
			sum := sha256.Sum256([]byte(lit)) // a digest: the settings are compared, never shown
			ss.dsnRef = hex.EncodeToString(sum[:])
		}
		ss.instances, ss.maxConns = pg.ExpectedInstances, pg.MaxConnections
	}
	return ss
}

// instanceID names this instance as the owner of queue leases. On the
// embedded store (one relay per store) it is the host name, stable across
// restarts, so a restarted relay takes its own leases back at once. On a
// shared database every process needs a name of its own (several may run
// on one host); a restarted one leaves its old leases to expire, and any
// instance then delivers those messages.
func instanceID(shared bool) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "oauthrelay"
	}
	if !shared {
		return h
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", h, os.Getpid(), b)
}

// openDurable opens the store of b's configuration (none: nil) and the
// queue over it; the queue starts with Start.
func (r *Runtime) openDurable(ctx context.Context, b *built) (*durable, error) {
	sc := b.cfg.Store
	if sc == nil {
		return nil, nil
	}
	var (
		st    store.Store
		stats func() (commits, messages uint64)
		d     *durable
	)
	if r.shared != nil {
		st, stats = r.shared.store, r.shared.store.CommitStats
		d = &durable{settings: storeSettingsOf(sc), store: st, owner: r.shared.coord.Owner(), sharedStore: true,
			degraded: r.shared.coord.Degraded}
	} else {
		sealer, err := r.sealer(ctx, b)
		if err != nil {
			return nil, err
		}
		lite, err := sqlite.Open(ctx, sc.Path, sqlite.Options{Logger: r.log.Named("store"), Exclusive: true, Sealer: sealer})
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", sc.Path, err)
		}
		st, stats = lite, lite.CommitStats
		d = &durable{settings: storeSettingsOf(sc), store: st, owner: instanceID(false)}
	}
	r.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "oauthrelay_store_commits_total",
			Help: "Write transactions the store committed (each one fsync).",
		}, func() float64 { c, _ := stats(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "oauthrelay_store_enqueued_messages_total",
			Help: "Messages durably stored in the queue. Divided by oauthrelay_store_commits_total: messages per fsync (a lower bound: commits also record attempts and history).",
		}, func() float64 { _, m := stats(); return float64(m) }))
	d.history = newHistoryWriter(st, sc.HistoryRetention, r.log.Named("history"), r.registry)
	d.history.subjects.Store(sc.HistorySubjects)
	q, err := queue.New(st, r.route, r.notifier(), queueConfig(b.cfg, d.owner), r.log.Named("queue"), r.registry)
	if err != nil {
		st.Close()
		return nil, err
	}
	d.queue = q
	return d, nil
}

// sealer is the store's body encryption: Vault Transit when configured
// (nil: bodies stored as they are). It follows the Vault client of the
// configuration in force; the key is checked with b's now.
func (r *Runtime) sealer(ctx context.Context, b *built) (store.Sealer, error) {
	t := b.cfg.Store.Transit
	if t == nil {
		return nil, nil
	}
	if b.vault == nil {
		return nil, errors.New("store transit encryption needs the vault block")
	}
	if err := seal.CheckTransit(ctx, b.vault.Client(), t.Mount, t.Key); err != nil {
		return nil, fmt.Errorf("store transit: %w", err)
	}
	client := func() *vault.Client {
		if cur := r.current.Load(); cur != nil && cur.vault != nil {
			return cur.vault.Client()
		}
		return b.vault.Client()
	}
	return seal.NewTransit(client, t.Mount, t.Key, seal.TransitOptions{Log: r.log.Named("seal")}), nil
}

// checkTransit verifies, before a reloaded configuration is swapped in,
// that its Vault login may still use the store's Transit key: the queue's
// sealer follows the current Vault client, so a token without the policy
// would make queued bodies unreadable.
func checkTransit(ctx context.Context, cfg *config.Config, b *built) error {
	if cfg.Store == nil || cfg.Store.Transit == nil || b.vault == nil {
		return nil
	}
	t := cfg.Store.Transit
	if err := seal.CheckTransit(ctx, b.vault.Client(), t.Mount, t.Key); err != nil {
		return fmt.Errorf("store transit: %w", err)
	}
	return nil
}

func queueConfig(cfg *config.Config, owner string) queue.Config {
	q := cfg.Queue
	return queue.Config{
		RetrySchedule:     q.RetrySchedule,
		MaxLifetime:       q.MaxLifetime,
		Workers:           q.Workers,
		MaxBouncesPerHour: q.MaxBouncesPerHour,
		DelayWarning:      q.DelayWarning,
		Owner:             owner,
		Lease:             queueLease(cfg),
		HistorySubjects:   cfg.Store != nil && cfg.Store.HistorySubjects,
	}
}

// queueLease is the configured lease, or the default for the store: short
// on a shared database, where other instances take over from a dead one.
func queueLease(cfg *config.Config) time.Duration {
	switch {
	case cfg.Queue.Lease > 0:
		return cfg.Queue.Lease
	case cfg.Store != nil && cfg.Store.Postgres != nil:
		return config.DefaultSharedQueueLease
	}
	return config.DefaultQueueLease
}

// start runs the queue's workers and the history writer.
func (d *durable) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.queue.Start(ctx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.history.run(ctx)
	}()
}

// checkReload refuses a configuration whose store block differs from the
// running one: the store is opened once.
func (d *durable) checkReload(cfg *config.Config) error {
	var running storeSettings
	if d != nil {
		running = d.settings
	}
	if storeSettingsOf(cfg.Store) != running || (d == nil) != (cfg.Store == nil) {
		return errors.New("the store block changed: restart the relay to apply it (the queue is opened once)")
	}
	return nil
}

// apply takes a reloaded configuration's queue and history settings.
func (d *durable) apply(cfg *config.Config) {
	if d == nil {
		return
	}
	d.queue.SetConfig(queueConfig(cfg, d.owner))
	d.history.setRetention(cfg.Store.HistoryRetention)
	d.history.subjects.Store(cfg.Store.HistorySubjects)
}

// stopQueue stops the queue's claiming at once and lets its deliveries in
// flight finish until ctx ends, in the background; close waits for it.
// Sessions still draining may store messages meanwhile: they wait for the
// next start.
func (d *durable) stopQueue(ctx context.Context) {
	if d == nil {
		return
	}
	d.queueStopped = make(chan error, 1)
	go func() { d.queueStopped <- d.queue.Stop(ctx) }()
}

// close waits for the queue to stop, writes the buffered history and
// closes the store.
func (d *durable) close() error {
	if d == nil {
		return nil
	}
	var err error
	if d.queueStopped != nil {
		err = <-d.queueStopped
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.sharedStore {
		return err
	}
	if cerr := d.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// route is how the queue reaches an account under the configuration in
// force: its direct transport, held until the delivery ends so that a
// reload cannot close the pool under it.
func (r *Runtime) route(account string) (queue.Route, bool) {
	b := r.acquireCurrent()
	m, err := b.mailbox(account)
	if err != nil {
		b.state.Release()
		var reply *smtp.SMTPError
		if errors.As(err, &reply) && reply == relay.ErrDomainBusy {
			return queue.Route{Unavailable: transport.ReplyText(reply)}, false
		}
		return queue.Route{}, false
	}
	return queue.Route{Transport: m.acct.Transport, Concurrency: m.maxConns, Release: b.state.Release}, true
}

// acquireCurrent returns the configuration in force, counted as used.
func (r *Runtime) acquireCurrent() *built {
	for {
		b := r.current.Load()
		b.state.Acquire()
		if r.current.Load() == b {
			return b
		}
		b.state.Release()
	}
}

// notifier builds the queue's delivery-status notifications (RFC 3464)
// from the account that tried to deliver the message.
func (r *Runtime) notifier() queue.Notifier {
	return func(orig *store.Envelope, header []byte, failed []queue.Failure, now time.Time) ([]byte, bool, error) {
		h, err := bounce.ReadHeader(bytes.NewReader(header))
		if err != nil {
			return nil, false, err
		}
		if ok, why := bounce.Eligible(orig.From, h); !ok {
			r.log.Named("queue").Info("no delivery-status notification", "msgid", orig.ID, "reason", why)
			return nil, false, nil
		}
		fs := make([]bounce.Failure, len(failed))
		for i, f := range failed {
			fs[i] = bounce.Failure{Action: f.Action, Rcpt: f.Rcpt, ORcpt: f.ORcpt, Status: f.Status, Reply: f.Reply, Reason: f.Reason,
				LastAttempt: f.LastAttempt, WillRetryUntil: f.WillRetryUntil}
		}
		// The original's header only, whatever RET asks (README "Queue
		// mode": never a body; RFC 3461 §4.3 makes RET a request).
		envID := queue.MailOptions(orig).EnvelopeID
		msg, err := bounce.Build(bounce.Original{QueueID: orig.ID, From: orig.From, Arrival: orig.Received, EnvID: envID, Header: h},
			fs, bounce.Options{ReportingMTA: r.current.Load().cfg.Server.Hostname, Account: orig.Account, Now: now})
		return msg, err == nil, err
	}
}

// storeHealthFresh is how long /health/ready reports the store from its
// last reading: load balancers, orchestrators and monitoring may probe it
// many times a second, and each reading costs the store a Ping and a
// Stats (a scan of the queue's depth).
const storeHealthFresh = 2 * time.Second

// health reports the store for /health/ready: whether it takes writes,
// and the queue's depth and oldest message. nil without a store. Probes
// at the same time share one reading.
func (d *durable) health() (status map[string]any, up bool) {
	if d == nil {
		return nil, true
	}
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	if now := time.Now(); now.Sub(d.healthAt) >= storeHealthFresh || now.Before(d.healthAt) {
		d.healthStatus, d.healthUp = d.readHealth()
		d.healthAt = time.Now()
	}
	return maps.Clone(d.healthStatus), d.healthUp
}

// expireHealth makes the next health call read the store again.
func (d *durable) expireHealth() {
	d.healthMu.Lock()
	d.healthAt = time.Time{}
	d.healthMu.Unlock()
}

func (d *durable) readHealth() (status map[string]any, up bool) {
	if d.degraded != nil {
		if down, err := d.degraded(); down && err != nil {
			return map[string]any{"up": false, "error": err.Error()}, false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	status = map[string]any{"up": true}
	if err := d.store.Ping(ctx); err != nil {
		status["up"], status["error"] = false, err.Error()
		return status, false
	}
	if st, err := d.store.Stats(ctx); err == nil {
		depth := map[string]int{}
		for k, n := range st.Depth {
			depth[k.State] += n
		}
		status["queued"], status["held"] = depth[store.StateQueued], depth[store.StateHeld]
		if !st.Oldest.IsZero() {
			status["oldest_queued_seconds"] = int(time.Since(st.Oldest).Seconds())
		}
	}
	return status, true
}
