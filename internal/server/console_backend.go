package server

import (
	"context"
	"errors"
	"os"
	"sort"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/admin"
	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// consoleBackend is what the operator console shows of the running relay
// (README "Operator console"): snapshots of the current configuration's
// accounts, the reload and Vault state, and the store.
type consoleBackend struct{ r *Runtime }

var _ admin.Backend = consoleBackend{}

// scrub removes every known secret value from text shown in the console
// (provider and Vault errors are not expected to hold any; this is the
// same safety net as the log's).
func (cb consoleBackend) scrub(s string) string {
	if cb.r.opts.Logging == nil || s == "" {
		return s
	}
	return cb.r.opts.Logging.Redactor().RedactString(s)
}

func (cb consoleBackend) scrubAll(lines []string) []string {
	if lines == nil {
		return nil
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = cb.scrub(l)
	}
	return out
}

func (cb consoleBackend) Store() admin.Store {
	if cb.r.durable == nil {
		return nil
	}
	return cb.r.durable.store
}

func (cb consoleBackend) Info() admin.Info {
	b := cb.r.current.Load()
	cfg := b.cfg
	info := admin.Info{Version: cb.r.opts.Version, Hostname: cfg.Server.Hostname, Started: cb.r.startedAt, QueueMaxLifetime: cfg.Queue.MaxLifetime}
	if info.Hostname == "" {
		info.Hostname, _ = os.Hostname()
	}
	cb.r.mu.Lock()
	for _, lc := range cfg.Listeners {
		l := admin.Listener{Name: lc.Name, Address: lc.Address, Delivery: lc.Delivery, TLSMode: lc.TLSMode}
		if ln := cb.r.listeners[lc.Address]; ln != nil {
			l.Address, l.Sessions = ln.ln.Addr().String(), ln.sessions()
		}
		info.Listeners = append(info.Listeners, l)
	}
	cb.r.mu.Unlock()
	if s := cfg.Store; s != nil {
		info.HistorySubjects, info.HistoryRetention = s.HistorySubjects, s.HistoryRetention
		info.Store = "sqlite"
		if s.Postgres != nil {
			info.Store = "postgres"
		}
	}
	if status, degraded := cb.r.sharedLimitsHealth(); status != nil {
		info.SharedLimits = "ok"
		if degraded {
			info.SharedLimits = "degraded"
		}
	}
	return info
}

// Accounts lists the accounts as /health/ready does (accountEntries), with each one's
// pool and queued messages.
func (cb consoleBackend) Accounts(ctx context.Context) []admin.Account {
	b := cb.r.current.Load()
	queued := cb.queuedByAccount(ctx)
	var out []admin.Account
	for _, e := range b.accountEntries() {
		as := e.status
		a := admin.Account{
			Address: e.address, Group: as.Group, Provider: as.Provider, Transport: transportName(e.group),
			TokenState: as.TokenState, LastError: cb.scrub(as.LastError), Circuit: as.Circuit, QuotaUsed: as.QuotaUsed,
			Queued: queued[store.DepthKey{State: store.StateQueued, Account: e.address}],
			Held:   queued[store.DepthKey{State: store.StateHeld, Account: e.address}],
		}
		if as.TokenExpiry != nil {
			a.TokenExpiry = *as.TokenExpiry
		}
		if as.LastRefresh != nil {
			a.LastRefresh = *as.LastRefresh
		}
		if e.mailbox != nil && e.mailbox.pool != nil {
			st := e.mailbox.pool.Stats()
			a.Pool = admin.Pool{Open: st.Open, Idle: st.Idle, Max: st.Max}
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func transportName(g *config.AccountGroup) string {
	if g.Provider == nil || g.Provider.Transport == "" {
		return config.TransportSMTP
	}
	return g.Provider.Transport
}

// queuedByAccount is the queue's depth by state and account (none
// without a store, or while it cannot answer).
func (cb consoleBackend) queuedByAccount(ctx context.Context) map[store.DepthKey]int {
	if cb.r.durable == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cb.r.durable.store.Stats(ctx)
	if err != nil {
		return nil
	}
	return st.Depth
}

func (cb consoleBackend) Reload() admin.ReloadStatus {
	st := cb.r.metrics.reloadStatus()
	rs := admin.ReloadStatus{
		ConfigPath: cb.r.opts.ConfigPath, Loaded: st.LoadedAt,
		LastOK: st.LastResult != "failure", LastError: cb.scrub(st.LastError),
		Diagnostics: cb.scrubAll(st.Diagnostics), Reloads: st.Reloads,
	}
	if st.LastAttempt != nil && st.LastResult != "" && st.LastResult != "none" {
		rs.LastAttempt = *st.LastAttempt
	}
	return rs
}

func (cb consoleBackend) TriggerReload(ctx context.Context) error {
	if cb.r.opts.ConfigPath == "" {
		return errNoConfigFile
	}
	if err := cb.r.Reload(ctx); err != nil {
		// Shown in the console as is: scrubbed like the reload status.
		return errors.New(cb.scrub(err.Error()))
	}
	return nil
}

func (cb consoleBackend) Vault() admin.VaultStatus {
	b := cb.r.current.Load()
	if b.vault == nil {
		return admin.VaultStatus{}
	}
	v := b.vault.Status()
	vs := admin.VaultStatus{
		Configured: true, Address: v.Address, AuthMethod: v.AuthMethod, Authenticated: v.Up,
		TokenExpiry: v.TokenExpiry, LastError: cb.scrub(v.LastError),
	}
	for _, p := range b.store.VaultPaths() {
		for _, f := range p.Fields {
			vs.Secrets = append(vs.Secrets, admin.VaultSecret{Ref: p.Path + "#" + f, Version: p.Version, LastRead: p.Checked})
		}
	}
	return vs
}
