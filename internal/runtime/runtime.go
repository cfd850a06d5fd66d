// Package runtime turns a validated configuration into a running relay: it
// builds the State, owns the SMTP listeners and the telemetry endpoint, and
// runs the shutdown lifecycle. It is the only package that stops things.
package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
)

// Options are the runtime's non-configuration inputs.
type Options struct {
	Logger hclog.Logger
	// ExtraHTTP adds handlers to the telemetry server (dev mode's message
	// list).
	ExtraHTTP map[string]http.Handler
}

// Runtime is a running relay.
type Runtime struct {
	log   hclog.Logger
	opts  Options
	state atomic.Pointer[relay.State]
	cur   *built

	// workCtx is cancelled when in-flight upstream work must be abandoned.
	workCtx    context.Context
	cancelWork context.CancelFunc

	// sessions caps concurrent client sessions over all listeners
	// (server { global_concurrency }, -global-concurrency).
	sessions *limits.SessionLimit

	registry *prometheus.Registry

	// bgCtx ends background work (Vault token upkeep, rotation polling).
	bgCtx    context.Context
	cancelBg context.CancelFunc

	mu        sync.Mutex
	listeners []*listener
	telemetry *telemetry.Server
}

type listener struct {
	cfg *config.Listener
	ln  net.Listener
	srv *smtp.Server
}

// New builds the relay from cfg (resolving secrets, creating token sources)
// without opening sockets.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Runtime, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	reg := telemetry.NewRegistry()
	b, err := build(ctx, cfg, opts.Logger, secrets.NewMetrics(reg))
	if err != nil {
		return nil, err
	}
	r := &Runtime{log: opts.Logger, opts: opts, cur: b, registry: reg, sessions: limits.NewSessionLimit(cfg.Server.GlobalConcurrency)}
	r.workCtx, r.cancelWork = context.WithCancel(context.Background())
	r.bgCtx, r.cancelBg = context.WithCancel(context.Background())
	r.state.Store(b.state)
	return r, nil
}

// Start opens every listener and the telemetry endpoint. On error nothing
// stays open.
func (r *Runtime) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := r.cur.cfg
	for _, lc := range cfg.Listeners {
		l, err := r.openListener(lc)
		if err != nil {
			r.closeListenersLocked()
			return err
		}
		r.listeners = append(r.listeners, l)
	}
	if cfg.Telemetry.Address != "" {
		ts, err := telemetry.Listen(cfg.Telemetry.Address, r.registry, r.ready, r.opts.ExtraHTTP)
		if err != nil {
			r.closeListenersLocked()
			return fmt.Errorf("telemetry listener %s: %w", cfg.Telemetry.Address, err)
		}
		r.telemetry = ts
		r.log.Info("telemetry listening", "address", ts.Addr().String())
	}
	if r.cur.vault != nil {
		go r.cur.vault.KeepAlive(r.bgCtx)
		go r.cur.store.Watch(r.bgCtx)
	}
	for _, l := range r.listeners {
		go func(l *listener) {
			if err := l.srv.Serve(l.ln); err != nil {
				r.log.Error("listener stopped", "listener", l.cfg.Name, "error", err)
			}
		}(l)
		r.log.Info("listening", "listener", l.cfg.Name, "address", l.ln.Addr().String(), "tls_mode", l.cfg.TLSMode)
	}
	return nil
}

func (r *Runtime) openListener(lc *config.Listener) (*listener, error) {
	var tlsCfg *tls.Config
	if lc.TLSMode != config.TLSNone {
		cert, err := tls.LoadX509KeyPair(lc.TLSCertFile, lc.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("listener %q: loading TLS certificate: %w", lc.Name, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	if lc.TLSMode == config.TLSImplicit {
		// A refused client of an implicit-TLS port cannot read plaintext.
		ln = tls.NewListener(r.sessions.Listener(ln, ""), tlsCfg)
	} else {
		ln = r.sessions.Listener(ln, "421 4.3.2 Too many concurrent sessions, try again later\r\n")
	}
	log := r.log.Named("smtp")
	be := relay.NewBackend(r.workCtx, &r.state, relay.ListenerSettings{Name: lc.Name, AllowInsecureAuth: lc.AllowInsecureAuth}, log)
	srv := smtp.NewServer(be)
	srv.Domain = r.cur.cfg.Server.Hostname
	srv.MaxMessageBytes = lc.MaxMessageSize
	srv.MaxRecipients = lc.MaxRecipients
	srv.ReadTimeout = lc.ReadTimeout
	srv.WriteTimeout = lc.WriteTimeout
	// Sessions enforce the plaintext-AUTH rule themselves (538 5.7.11,
	// loopback exemption); go-smtp's own check would answer 523.
	srv.AllowInsecureAuth = true
	if lc.TLSMode == config.TLSStartTLS {
		srv.TLSConfig = tlsCfg
	}
	srv.ErrorLog = log.With("listener", lc.Name).StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	return &listener{cfg: lc, ln: ln, srv: srv}, nil
}

func (r *Runtime) closeListenersLocked() {
	for _, l := range r.listeners {
		l.ln.Close()
	}
	r.listeners = nil
}

// ListenerAddr returns the bound address of a listener, by name.
func (r *Runtime) ListenerAddr(name string) net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.listeners {
		if l.cfg.Name == name {
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

// accountStatus is one account's entry in /health/ready.
type accountStatus struct {
	Group       string     `json:"group"`
	Provider    string     `json:"provider"`
	TokenState  string     `json:"token_state"`
	TokenExpiry *time.Time `json:"token_expiry,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

func (r *Runtime) ready() (bool, any) {
	r.mu.Lock()
	b := r.cur
	listening := len(r.listeners)
	r.mu.Unlock()
	accounts := map[string]accountStatus{}
	degraded := 0
	for _, a := range b.cfg.Accounts() {
		name := a.Address
		if a.Group.Flow == config.FlowClientCredentials {
			name = "group:" + a.Group.Name
		}
		st := b.sources[name].Status()
		as := accountStatus{Group: a.Group.Name, Provider: a.Group.ProviderName, TokenState: "not yet requested"}
		switch {
		case st.LastError != "":
			as.TokenState, as.LastError = "failing", st.LastError
			degraded++
		case st.HasToken:
			as.TokenState = "valid"
			exp := st.Expiry
			as.TokenExpiry = &exp
		}
		accounts[a.Address] = as
	}
	ready := listening == len(b.cfg.Listeners) && listening > 0
	if b.cfg.Telemetry.ReadyRequiresAllAccounts && degraded > 0 {
		ready = false
	}
	status := "ready"
	switch {
	case !ready:
		status = "not ready"
	case degraded > 0:
		status = "degraded"
	}
	body := map[string]any{"status": status, "listeners": listening, "degraded_accounts": degraded, "accounts": accounts}
	if configured, up, expiry := b.store.VaultStatus(); configured {
		v := map[string]any{"up": up}
		if !expiry.IsZero() {
			v["token_expiry"] = expiry
		}
		body["vault"] = v
	}
	return ready, body
}

// Shutdown stops accepting connections, lets sessions finish within the
// context's deadline, then closes whatever is left.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	listeners := r.listeners
	r.listeners = nil
	ts := r.telemetry
	r.telemetry = nil
	r.mu.Unlock()

	var wg sync.WaitGroup
	var forced atomic.Int32
	for _, l := range listeners {
		wg.Add(1)
		go func(l *listener) {
			defer wg.Done()
			if err := l.srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				forced.Add(1)
				l.srv.Close()
			}
		}(l)
	}
	wg.Wait()
	r.cancelWork()
	r.cancelBg()
	if ts != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = ts.Shutdown(sctx)
	}
	if n := forced.Load(); n > 0 {
		return fmt.Errorf("%d listener(s) had sessions still open at the shutdown deadline; they were closed", n)
	}
	return nil
}

// Run builds and starts the relay, serves until ctx is cancelled, then
// shuts down gracefully within the configured shutdown_timeout.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	r, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	if err := r.Start(); err != nil {
		return err
	}
	r.log.Info("relay started", "accounts", len(r.cur.state.Accounts), "clients", len(r.cur.state.Clients), "dry_run", cfg.Server.DryRun)
	if cfg.Server.DryRun {
		r.log.Warn("DRY RUN: messages are authenticated upstream and reset, never sent")
	}
	<-ctx.Done()
	r.log.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	err = r.Shutdown(sctx)
	if err != nil {
		r.log.Warn("shutdown", "error", err)
	}
	r.log.Info("stopped")
	return nil
}
