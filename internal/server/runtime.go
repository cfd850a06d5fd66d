// Package runtime turns a validated configuration into a running relay: it
// builds the State, owns the SMTP listeners and the telemetry endpoint, and
// runs the reload and shutdown lifecycles. It is the only package that
// stops things.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/spool"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// Options are the runtime's non-configuration inputs.
type Options struct {
	// Logging, when set, is reconfigured by reloads (log_level,
	// log_format) and learns every secret for its redaction safety net.
	// Logger is used when Logging is nil.
	Logging *telemetry.Logging
	Logger  hclog.Logger
	// ConfigPath and Overrides are what Reload reads.
	ConfigPath string
	Overrides  config.Overrides
	// ExtraHTTP adds handlers to the telemetry server (dev mode's message
	// list).
	ExtraHTTP map[string]http.Handler
	Version   string
	// Reload triggers a reload in Run (the command line maps SIGHUP to it).
	Reload <-chan struct{}
	// NoMigrate opens a shared database without migrating its schema
	// (`oauthrelay check`: an older schema is an error, not a change).
	NoMigrate bool
}

// shutdownGrace is how long sessions still open at the shutdown deadline
// get to read their 421 before the connections are closed.
const shutdownGrace = time.Second

// Runtime is a running relay.
type Runtime struct {
	log  hclog.Logger
	opts Options

	// shared is the database several instances share (nil: none).
	shared *sharedDB

	state   atomic.Pointer[relay.State] // what new sessions use
	current atomic.Pointer[built]

	sessions *limits.SessionLimit
	closing  atomic.Bool   // past the shutdown deadline: sessions answer 421
	budget   *spool.Budget // memory for message bytes, process-wide

	registry     *telemetry.Registry
	deps         deps
	relayMetrics *relay.Metrics
	metrics      *runtimeMetrics

	// workCtx is cancelled when in-flight upstream work must be abandoned.
	workCtx    context.Context
	cancelWork context.CancelFunc

	mu        sync.Mutex // serialises Start, Reload and Shutdown
	listeners map[string]*listener
	listening atomic.Int32
	retiring  []*generation
	telemetry *telemetry.Server
	telemAddr string
	console   *console // the operator console (nil: no admin block)
	// adminHandler serves every console of the runtime (made at the first).
	adminHandler http.Handler
	startedAt    time.Time
	watcher      *configWatcher
	started      bool
	stopped      bool
	retireWG     sync.WaitGroup
	retiringMu   sync.Mutex

	// durable is the store, the queue and the history writer (nil
	// without a store block).
	durable *durable
}

// New builds the relay from cfg (logging in to Vault, resolving secrets,
// creating token sources) without opening sockets.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Runtime, error) {
	if opts.Logging != nil {
		opts.Logger = opts.Logging.Logger()
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	reg := telemetry.NewRegistry()
	r := &Runtime{
		log:          opts.Logger,
		opts:         opts,
		registry:     reg,
		sessions:     limits.NewSessionLimit(cfg.Server.GlobalConcurrency),
		relayMetrics: relay.NewMetrics(reg),
		listeners:    map[string]*listener{},
		deps: deps{
			registry: newRegistry(opts.Logger.Named("limits")),
			log:      opts.Logger,
			secrets:  secrets.NewMetrics(reg),
			oauth:    oauth.NewMetrics(reg),
			upstream: upstream.NewMetrics(reg),
		},
	}
	if opts.Logging != nil {
		red := opts.Logging.Redactor()
		r.deps.redact = red.Set
	}
	r.deps.forget = r.forgetAccount
	r.metrics = newRuntimeMetrics(reg, r, opts.Version)
	r.budget = spool.NewBudget(0, "")
	r.setBudget(cfg.Server)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "oauthrelay_message_memory_bytes",
		Help: "Bytes of messages in flight held in memory (bounded by message_memory_limit).",
	}, func() float64 { return float64(r.budget.InUse()) }))
	r.workCtx, r.cancelWork = context.WithCancel(context.Background())
	b, err := prepare(ctx, cfg, r.deps, nil)
	if err != nil {
		return nil, err
	}
	if sharedStore(cfg) {
		// Before the accounts: their limits and pools are shared through it.
		if r.shared, err = r.openShared(ctx, b); err != nil {
			b.plan.abort()
			return nil, err
		}
		r.deps.coord = r.shared.coord
	}
	if b, err = b.assemble(r.deps, nil); err != nil {
		_ = r.shared.close(r.log)
		return nil, err
	}
	r.deps.registry.commit(b.plan, time.Now())
	r.registerSecrets(b)
	r.current.Store(b)
	r.state.Store(b.state)
	if r.durable, err = r.openDurable(ctx, b); err != nil {
		b.stopBackground()
		_ = r.shared.close(r.log)
		return nil, err
	}
	return r, nil
}

// setBudget applies the server's message memory settings.
func (r *Runtime) setBudget(s config.Server) {
	dir := ""
	if s.SpillToDisk {
		dir = s.SpoolDir
		if dir == "" {
			dir = os.TempDir()
		}
	}
	r.budget.SetLimit(s.MessageMemoryLimit, dir)
}

// registerSecrets hands every configured secret value to the log
// redaction safety net, and every value the store takes later (rotations
// in Vault or files, written-back refresh tokens, the Vault token).
func (r *Runtime) registerSecrets(b *built) {
	if r.deps.redact == nil {
		return
	}
	b.store.OnValue(r.deps.redact)
	values := b.store.Values()
	for _, ref := range b.cfg.SecretRefs() {
		values = append(values, ref.Literal())
	}
	if v := b.cfg.Vault; v != nil {
		for _, ref := range []config.SecretRef{v.Auth.Token, v.Auth.RoleID, v.Auth.SecretID} {
			if ref.IsSet() {
				if val, err := secrets.ResolveLocal(ref); err == nil {
					values = append(values, val)
				}
			}
		}
	}
	for i, v := range values {
		r.deps.redact(fmt.Sprintf("config:%d", i), v)
	}
}

// Start opens every listener and the telemetry endpoint. On error nothing
// stays open.
func (r *Runtime) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return errors.New("runtime already started")
	}
	b := r.current.Load()
	cfg := b.cfg
	var opened []*listener
	fail := func(err error) error {
		for _, l := range opened {
			l.ln.Close()
		}
		return err
	}
	gens := map[*listener]*generation{}
	for _, lc := range cfg.Listeners {
		ln, err := openSocket(lc.Address)
		if err != nil {
			return fail(fmt.Errorf("listener %q: %w", lc.Name, err))
		}
		l := r.newListener(lc.Address, ln)
		opened = append(opened, l)
		g, err := r.newGeneration(b, lc, l.perIP)
		if err != nil {
			return fail(err)
		}
		gens[l] = g
	}
	// Set before the console serves: its overview reads it without a lock.
	r.startedAt = time.Now()
	if err := r.startConsole(b); err != nil {
		return fail(err)
	}
	if cfg.Telemetry.Address != "" {
		ts, err := telemetry.Listen(cfg.Telemetry.Address, r.registry, r.ready, r.opts.ExtraHTTP)
		if err != nil {
			r.console.close()
			r.console = nil
			return fail(fmt.Errorf("telemetry listener %s: %w", cfg.Telemetry.Address, err))
		}
		r.telemetry, r.telemAddr = ts, cfg.Telemetry.Address
		r.log.Info("telemetry listening", "address", ts.Addr().String())
	}
	for _, l := range opened {
		g := gens[l]
		l.install(g)
		l.start()
		r.listeners[l.addr] = l
		r.log.Info("listening", "listener", g.cfg.Name, "address", l.ln.Addr().String(), "tls_mode", g.cfg.TLSMode)
	}
	r.listening.Store(int32(len(r.listeners)))
	b.startBackground(nil)
	if r.shared != nil {
		r.shared.start(r.log.Named("limits"))
	}
	if r.durable != nil {
		r.durable.start()
	}
	r.setWatch(cfg.Server.WatchConfig)
	r.started = true
	r.metrics.loaded(r.startedAt)
	return nil
}

func (r *Runtime) newListener(addr string, ln net.Listener) *listener {
	l := &listener{addr: addr, log: r.log.Named("smtp"), perIP: limits.NewPerIP(0, 0, 0)}
	perIP := l.perIP.Listener(ln, func() string {
		if l.implicitTLS.Load() {
			return ""
		}
		return "421 4.7.0 Too many connections from your address, try again later\r\n"
	})
	l.ln = r.sessions.Listener(perIP, func() string {
		if l.implicitTLS.Load() {
			return "" // the client expects a TLS handshake, not text
		}
		return "421 4.3.2 Too many concurrent sessions, try again later\r\n"
	})
	return l
}

// newGeneration prepares a server for a listener configuration of the
// build being installed (whose secrets hold the listener's certificate).
func (r *Runtime) newGeneration(b *built, lc *config.Listener, perIP *limits.PerIP) (*generation, error) {
	tlsCfg, err := loadListenerTLS(lc, b.store.Get, r.log.Named("smtp"))
	if err != nil {
		return nil, err
	}
	log := r.log.Named("smtp")
	if tlsCfg != nil && tlsCfg.MinVersion < tls.VersionTLS12 {
		log.Warn("listener accepts legacy TLS (min_tls_version): TLS 1.0/1.1 and cipher suites without forward secrecy, for old devices only",
			"listener", lc.Name, "min_tls_version", tls.VersionName(tlsCfg.MinVersion))
	}
	set := relay.ListenerSettings{
		Name:              lc.Name,
		AllowInsecureAuth: lc.AllowInsecureAuth,
		Metrics:           r.relayMetrics,
		Closing:           &r.closing,
		PerIP:             perIP,
		Budget:            r.budget,
	}
	if r.durable != nil {
		set.History = r.durable.history
		if lc.Delivery == config.DeliveryQueue {
			set.Queue = r.durable.queue.Transport()
		}
	} else if lc.Delivery == config.DeliveryQueue {
		return nil, fmt.Errorf("listener %q: delivery = \"queue\" needs a store block", lc.Name)
	}
	be := relay.NewBackend(r.workCtx, &r.state, set, log)
	srv := smtp.NewServer(be)
	srv.Domain = b.cfg.Server.Hostname
	srv.MaxMessageBytes = lc.MaxMessageSize
	srv.MaxLineLength = int(lc.MaxLineLength)
	srv.MaxRecipients = lc.MaxRecipients
	srv.ReadTimeout = lc.ReadTimeout
	srv.WriteTimeout = lc.WriteTimeout
	// Sessions enforce the plaintext-AUTH rule themselves (538 5.7.11,
	// loopback exemption); go-smtp's own check would answer 523.
	srv.AllowInsecureAuth = true
	// SMTPUTF8 (RFC 6531) and DSN (RFC 3461) are passed on to providers
	// that offer them and refused cleanly, or (queue listeners) honoured
	// by the relay's own notifications, where they do not (README "How a
	// message travels"). 8BITMIME, PIPELINING and CHUNKING go-smtp always
	// offers; BDAT chunks reach the session as one stream.
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	if lc.TLSMode == config.TLSStartTLS {
		srv.TLSConfig = tlsCfg
	}
	srv.ErrorLog = log.With("listener", lc.Name).StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	return &generation{cfg: lc, srv: srv, backend: be, handoff: newHandoff(nil), tls: tlsCfg}, nil
}

// logDiagnostics logs a configuration's diagnostics, each at its
// severity: the warnings of a configuration that loads are worth reading
// too.
func (r *Runtime) logDiagnostics(diags hcl.Diagnostics) {
	for _, d := range diags {
		if d.Severity == hcl.DiagWarning {
			r.log.Warn("configuration warning", "diagnostic", config.FormatDiagnostic(d))
			continue
		}
		r.log.Error("configuration error", "diagnostic", config.FormatDiagnostic(d))
	}
}

// Reload reads the configuration again and applies it: the new State is
// built completely off to the side (secrets, token sources reused for
// unchanged accounts, certificates, new sockets), then swapped in for new
// sessions. Sessions in progress keep the State they started with. On any
// error before the swap the running configuration stays untouched.
func (r *Runtime) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || !r.started {
		return errors.New("the relay is not running")
	}
	began := time.Now()
	fail := func(err error) error {
		r.metrics.reloadFailed(err)
		r.log.Error("reload failed; the running configuration stays in effect", "error", err)
		return err
	}
	loaded := config.Load(r.opts.ConfigPath, r.opts.Overrides)
	r.logDiagnostics(loaded.Diagnostics)
	r.metrics.reloadDiagnostics(loaded.Diagnostics, true)
	if loaded.Diagnostics.HasErrors() {
		return fail(fmt.Errorf("configuration has %d error(s)", len(loaded.Diagnostics.Errs())))
	}
	cfg := loaded.Config
	if diags := config.CheckHost(cfg); diags.HasErrors() {
		r.logDiagnostics(diags)
		r.metrics.reloadDiagnostics(diags, false)
		return fail(fmt.Errorf("configuration has %d error(s) on this host", len(diags.Errs())))
	}
	if err := r.durable.checkReload(cfg); err != nil {
		return fail(err)
	}
	old := r.current.Load()
	nb, err := build(ctx, cfg, r.deps, old)
	if err != nil {
		return fail(err)
	}
	if err := checkTransit(ctx, cfg, nb); err != nil {
		nb.plan.abort()
		return fail(err)
	}

	// Prepare every listener change; nothing is visible yet.
	type change struct {
		l     *listener
		g     *generation
		isNew bool
	}
	var changes []change
	var opened []*listener
	var ts *telemetry.Server
	var cc consoleChange
	abort := func(err error) error {
		for _, l := range opened {
			l.ln.Close()
		}
		cc.abort()
		if ts != nil {
			_ = ts.Shutdown(context.Background())
		}
		nb.plan.abort()
		return fail(err)
	}
	wanted := map[string]bool{}
	for _, lc := range cfg.Listeners {
		wanted[lc.Address] = true
		l, isNew := r.listeners[lc.Address], false
		if l == nil {
			ln, err := openSocket(lc.Address)
			if err != nil {
				return abort(fmt.Errorf("listener %q: %w", lc.Name, err))
			}
			l, isNew = r.newListener(lc.Address, ln), true
			opened = append(opened, l)
		}
		g, err := r.newGeneration(nb, lc, l.perIP)
		if err != nil {
			return abort(err)
		}
		changes = append(changes, change{l: l, g: g, isNew: isNew})
	}
	if cfg.Telemetry.Address != r.telemAddr && cfg.Telemetry.Address != "" {
		var err error
		if ts, err = telemetry.Listen(cfg.Telemetry.Address, r.registry, r.ready, r.opts.ExtraHTTP); err != nil {
			ts = nil
			return abort(fmt.Errorf("telemetry listener %s: %w", cfg.Telemetry.Address, err))
		}
	}

	if cc, err = r.prepareConsole(nb); err != nil {
		return abort(err)
	}

	// Commit: from here on nothing fails.
	r.registerSecrets(nb)
	r.current.Store(nb)
	r.state.Store(nb.state)
	stale := r.deps.registry.commit(nb.plan, time.Now())
	nb.startBackground(old)
	old.stopBackground()
	r.sessions.SetMax(cfg.Server.GlobalConcurrency)
	r.setBudget(cfg.Server)
	r.durable.apply(cfg)
	if r.opts.Logging != nil {
		r.opts.Logging.Configure(cfg.Server.LogLevel, cfg.Server.LogFormat)
	}
	added, kept, removed := 0, 0, 0
	for _, c := range changes {
		if c.isNew {
			r.listeners[c.l.addr] = c.l
		}
		if prevGen := c.l.install(c.g); prevGen != nil {
			r.retire(prevGen)
		}
		if c.isNew {
			c.l.start()
			added++
			r.log.Info("listening", "listener", c.g.cfg.Name, "address", c.l.ln.Addr().String(), "tls_mode", c.g.cfg.TLSMode)
		} else {
			kept++
		}
	}
	for addr, l := range r.listeners {
		if wanted[addr] {
			continue
		}
		if g := l.stopAccepting(); g != nil {
			r.log.Info("listener removed; draining its sessions", "listener", g.cfg.Name, "address", addr)
			r.retire(g)
		}
		delete(r.listeners, addr)
		removed++
	}
	r.listening.Store(int32(len(r.listeners)))
	if cfg.Telemetry.Address != r.telemAddr {
		if r.telemetry != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.telemetry.Shutdown(sctx)
			cancel()
		}
		r.telemetry, r.telemAddr = ts, cfg.Telemetry.Address
	}
	r.applyConsole(cc)
	r.setWatch(cfg.Server.WatchConfig)
	r.metrics.reloadSucceeded(time.Now())
	r.log.Info("configuration reloaded", "listeners_kept", kept, "listeners_added", added, "listeners_removed", removed,
		"accounts", len(nb.state.Accounts), "clients", len(nb.state.Clients), "took", time.Since(began).Round(time.Millisecond))
	r.retireWG.Add(1)
	go func() {
		defer r.retireWG.Done()
		r.retireState(old, stale)
	}()
	return nil
}

// retire lets a replaced generation's sessions finish in the background:
// they may go on for retired_session_timeout, then the idle ones are closed
// (421) while those in a transaction finish it first.
func (r *Runtime) retire(g *generation) {
	grace := r.current.Load().cfg.Server.RetiredSessionTimeout
	g.backend.Retire(time.Now(), grace)
	r.retiringMu.Lock()
	r.retiring = append(r.retiring, g)
	r.retiringMu.Unlock()
	r.retireWG.Add(1)
	go func() {
		defer r.retireWG.Done()
		drained := g.drained()
		timer := time.NewTimer(grace)
		defer timer.Stop()
		var tick <-chan time.Time
		for done := false; !done; {
			select {
			case <-drained:
				done = true
			case <-timer.C:
				t := time.NewTicker(time.Second)
				defer t.Stop()
				tick = t.C
				g.closeIdle()
			case <-tick:
				g.closeIdle()
			case <-r.workCtx.Done():
				done = true // Shutdown waits for the generation itself
			}
		}
		r.retiringMu.Lock()
		for i, x := range r.retiring {
			if x == g {
				r.retiring = append(r.retiring[:i], r.retiring[i+1:]...)
				break
			}
		}
		r.retiringMu.Unlock()
	}()
}

// retireState waits for the sessions of a replaced State to end, then
// closes the upstream pools only it used.
func (r *Runtime) retireState(old *built, stale []*upstream.Pool) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	// At shutdown too: the registry no longer knows these pools.
	defer func() {
		for _, p := range stale {
			p.Close()
		}
	}()
	for old.state.ActiveSessions() > 0 {
		select {
		case <-t.C:
		case <-r.workCtx.Done():
			return
		}
	}
	r.log.Debug("previous configuration retired: its last session ended", "pools_closed", len(stale))
}

// ListenerAddr returns the bound address of a listener, by name.
func (r *Runtime) ListenerAddr(name string) net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.listeners {
		if g := l.current(); g != nil && g.cfg.Name == name {
			return l.ln.Addr()
		}
	}
	return nil
}

// TelemetryAddr returns the telemetry endpoint's address, or nil.
func (r *Runtime) TelemetryAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.telemetry == nil {
		return nil
	}
	return r.telemetry.Addr()
}

// Shutdown stops accepting connections and lets sessions finish until the
// context's deadline; sessions still open then are answered 421 4.3.2 on
// their next command and closed shortly after.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	r.setWatch(false)
	var gens []*generation
	for _, l := range r.listeners {
		if g := l.stopAccepting(); g != nil {
			gens = append(gens, g)
		}
	}
	r.listeners = map[string]*listener{}
	r.listening.Store(0)
	ts := r.telemetry
	r.telemetry = nil
	// The console goes first: it reads the store, which closes below.
	con := r.console
	r.console = nil
	r.mu.Unlock()
	con.close()
	r.retiringMu.Lock()
	gens = append(gens, r.retiring...)
	r.retiringMu.Unlock()
	// The queue stops claiming now; its deliveries in flight share the
	// deadline with the sessions.
	r.durable.stopQueue(ctx)

	// Wait for the sessions of every generation, the retired ones included:
	// a session opened before a reload is as much in flight as a new one.
	done := make(chan struct{})
	go func() {
		for _, g := range gens {
			<-g.drained()
		}
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		r.closing.Store(true)
		r.log.Warn("shutdown deadline reached; answering 421 to open sessions and closing them")
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			for _, g := range gens {
				g.closeConns()
			}
			<-done
			err = errors.New("sessions were still open at the shutdown deadline; they were closed")
		}
	}
	// A queue delivery that did not finish by the deadline was abandoned:
	// its message stays stored and goes out after the restart.
	if derr := r.durable.close(); derr != nil {
		r.log.Warn("queue stopped with deliveries unfinished; they stay queued", "error", derr.Error())
	}
	r.cancelWork()
	r.retireWG.Wait()
	r.closePools(ctx)
	if serr := r.shared.close(r.log); serr != nil {
		r.log.Warn("closing the shared database", "error", serr.Error())
	}
	r.current.Load().stopBackground()
	if ts != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = ts.Shutdown(sctx)
	}
	return err
}

// closePools says QUIT to every idle upstream connection, the pools side
// by side, until ctx's deadline: each QUIT waits for the provider's reply
// (up to its own timeout), and a provider that no longer answers must not
// hold the stop past shutdown_timeout. The goodbyes still under way then
// end on their own within that timeout.
func (r *Runtime) closePools(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range r.deps.registry.allPools() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Close()
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("shutdown deadline reached while saying QUIT to idle provider connections; not waiting for their replies")
	}
}

// MetricNames lists every metric the relay exports.
func (r *Runtime) MetricNames() []string { return r.registry.Names() }

// Run builds and starts the relay, reloads on opts.Reload, serves until
// ctx is cancelled, then shuts down gracefully within shutdown_timeout.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	r, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	if err := r.Start(); err != nil {
		return err
	}
	r.log.Info("relay started", "version", opts.Version, "accounts", len(cfg.Accounts()), "clients", len(cfg.Clients()), "dry_run", cfg.Server.DryRun)
	if cfg.Server.DryRun {
		r.log.Warn("DRY RUN: messages are authenticated upstream and reset, never sent")
	}
	for {
		select {
		case <-opts.Reload:
			r.log.Info("reload requested")
			_ = r.Reload(ctx)
			continue
		case <-ctx.Done():
		}
		break
	}
	timeout := r.current.Load().cfg.Server.ShutdownTimeout
	r.log.Info("shutting down", "timeout", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.Shutdown(sctx); err != nil {
		r.log.Warn("shutdown", "error", err)
	}
	r.log.Info("stopped")
	return nil
}

// forgetAccount removes the metric series of a mailbox that a domain-wide
// account no longer serves.
func (r *Runtime) forgetAccount(account string) {
	r.relayMetrics.ForgetAccount(account)
	if r.durable != nil && r.durable.queue != nil {
		r.durable.queue.ForgetAccount(account)
	}
}
