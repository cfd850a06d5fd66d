package admin

import (
	"context"
	"sort"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// The views below are what the API answers (JSON, snake_case, RFC 3339
// times, zero times left out) and what the pages show: one model, two
// renderings.

type overviewView struct {
	Relay     relayView      `json:"relay"`
	Listeners []listenerView `json:"listeners"`
	Accounts  accountCounts  `json:"accounts"`
	Queue     *queueCounts   `json:"queue"` // null without a store
	Reload    reloadView     `json:"reload"`
	Vault     vaultView      `json:"vault"`
}

type relayView struct {
	Version                 string    `json:"version"`
	Hostname                string    `json:"hostname"`
	Started                 time.Time `json:"started,omitzero"`
	UptimeSeconds           int64     `json:"uptime_seconds"`
	Store                   string    `json:"store"` // sqlite, postgres or "" (none)
	HistoryRetentionSeconds int64     `json:"history_retention_seconds"`
	HistorySubjects         bool      `json:"history_subjects"`
	SharedLimits            string    `json:"shared_limits,omitempty"`
	QueueMaxLifetimeSeconds int64     `json:"queue_max_lifetime_seconds,omitempty"`
}

type listenerView struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Delivery string `json:"delivery"`
	TLSMode  string `json:"tls_mode"`
	Sessions int    `json:"sessions"`
}

type accountCounts struct {
	Total    int `json:"total"`
	Degraded int `json:"degraded"`
}

type queueCounts struct {
	Queued              int            `json:"queued"`
	Held                int            `json:"held"`
	OldestQueued        time.Time      `json:"oldest_queued,omitzero"`
	OldestQueuedSeconds int64          `json:"oldest_queued_seconds"`
	ByAccount           []accountDepth `json:"by_account"`
	// Error: the store could not say (the counts are then zero).
	Error string `json:"error,omitempty"`
}

type accountDepth struct {
	Account string `json:"account"`
	Queued  int    `json:"queued"`
	Held    int    `json:"held"`
}

type accountView struct {
	Address     string             `json:"address"`
	Group       string             `json:"group"`
	Provider    string             `json:"provider"`
	Transport   string             `json:"transport"`
	TokenState  string             `json:"token_state"`
	TokenExpiry time.Time          `json:"token_expiry,omitzero"`
	LastRefresh time.Time          `json:"last_refresh,omitzero"`
	LastError   string             `json:"last_error,omitempty"`
	Circuit     string             `json:"circuit,omitempty"`
	QuotaUsed   map[string]float64 `json:"quota_used"`
	Pool        poolView           `json:"pool"`
	Queued      int                `json:"queued"`
	Held        int                `json:"held"`
	// Degraded: the token is failing or the circuit is not closed.
	Degraded bool `json:"degraded"`
}

type poolView struct {
	Open int `json:"open"`
	Idle int `json:"idle"`
	Max  int `json:"max"` // 0: no cap
}

type reloadView struct {
	ConfigPath  string    `json:"config_path"`
	Loaded      time.Time `json:"loaded,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// LastResult is none, success or failure, as in /health/ready.
	LastResult  string   `json:"last_result"`
	LastError   string   `json:"last_error,omitempty"`
	Diagnostics []string `json:"diagnostics"`
	Reloads     int      `json:"reloads"`
}

type vaultView struct {
	Configured    bool         `json:"configured"`
	Address       string       `json:"address,omitempty"`
	AuthMethod    string       `json:"auth_method,omitempty"`
	Authenticated bool         `json:"authenticated"`
	TokenExpiry   time.Time    `json:"token_expiry,omitzero"`
	LastError     string       `json:"last_error,omitempty"`
	Secrets       []secretView `json:"secrets"`
}

type secretView struct {
	Ref       string    `json:"ref"`
	Version   int       `json:"version"`
	LastRead  time.Time `json:"last_read,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

func relayOf(i Info, now time.Time) relayView {
	v := relayView{Version: i.Version, Hostname: i.Hostname, Started: i.Started, Store: i.Store,
		HistoryRetentionSeconds: int64(i.HistoryRetention / time.Second), HistorySubjects: i.HistorySubjects,
		SharedLimits: i.SharedLimits, QueueMaxLifetimeSeconds: int64(i.QueueMaxLifetime / time.Second)}
	if !i.Started.IsZero() {
		v.UptimeSeconds = int64(now.Sub(i.Started) / time.Second)
	}
	return v
}

func listenersOf(ls []Listener) []listenerView {
	out := make([]listenerView, len(ls))
	for i, l := range ls {
		out[i] = listenerView{Name: l.Name, Address: l.Address, Delivery: l.Delivery, TLSMode: l.TLSMode, Sessions: l.Sessions}
	}
	return out
}

func accountOf(a Account) accountView {
	quota := a.QuotaUsed
	if quota == nil {
		quota = map[string]float64{}
	}
	return accountView{Address: a.Address, Group: a.Group, Provider: a.Provider, Transport: a.Transport,
		TokenState: a.TokenState, TokenExpiry: a.TokenExpiry, LastRefresh: a.LastRefresh, LastError: a.LastError,
		Circuit: a.Circuit, QuotaUsed: quota, Pool: poolView(a.Pool), Queued: a.Queued, Held: a.Held,
		Degraded: a.TokenState == "failing" || (a.Circuit != "" && a.Circuit != "closed")}
}

func accountsOf(as []Account) []accountView {
	out := make([]accountView, len(as))
	for i, a := range as {
		out[i] = accountOf(a)
	}
	return out
}

func countAccounts(as []accountView) accountCounts {
	c := accountCounts{Total: len(as)}
	for _, a := range as {
		if a.Degraded {
			c.Degraded++
		}
	}
	return c
}

func reloadOf(r ReloadStatus) reloadView {
	v := reloadView{ConfigPath: r.ConfigPath, Loaded: r.Loaded, LastAttempt: r.LastAttempt, LastResult: "none",
		LastError: r.LastError, Diagnostics: r.Diagnostics, Reloads: r.Reloads}
	switch {
	case r.LastAttempt.IsZero():
	case r.LastOK:
		v.LastResult = "success"
	default:
		v.LastResult = "failure"
	}
	if v.Diagnostics == nil {
		v.Diagnostics = []string{}
	}
	return v
}

func vaultOf(vs VaultStatus) vaultView {
	v := vaultView{Configured: vs.Configured, Address: vs.Address, AuthMethod: vs.AuthMethod,
		Authenticated: vs.Authenticated, TokenExpiry: vs.TokenExpiry, LastError: vs.LastError, Secrets: []secretView{}}
	for _, s := range vs.Secrets {
		v.Secrets = append(v.Secrets, secretView(s))
	}
	return v
}

// queueCountsOf sums the store's queue depth; nil without a store.
func queueCountsOf(ctx context.Context, st Store, now time.Time) *queueCounts {
	if st == nil {
		return nil
	}
	c := &queueCounts{ByAccount: []accountDepth{}}
	stats, err := st.Stats(ctx)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	byAccount := map[string]*accountDepth{}
	for k, n := range stats.Depth {
		d := byAccount[k.Account]
		if d == nil {
			d = &accountDepth{Account: k.Account}
			byAccount[k.Account] = d
		}
		switch k.State {
		case store.StateHeld:
			c.Held += n
			d.Held += n
		default:
			c.Queued += n
			d.Queued += n
		}
	}
	for _, d := range byAccount {
		c.ByAccount = append(c.ByAccount, *d)
	}
	sort.Slice(c.ByAccount, func(i, j int) bool { return c.ByAccount[i].Account < c.ByAccount[j].Account })
	if !stats.Oldest.IsZero() {
		c.OldestQueued = stats.Oldest
		c.OldestQueuedSeconds = int64(now.Sub(stats.Oldest) / time.Second)
	}
	return c
}

func (s *Server) overview(ctx context.Context) overviewView {
	now, info := s.now(), s.b.Info()
	accounts := accountsOf(s.b.Accounts(ctx))
	return overviewView{Relay: relayOf(info, now), Listeners: listenersOf(info.Listeners),
		Accounts: countAccounts(accounts), Queue: queueCountsOf(ctx, s.b.Store(), now),
		Reload: reloadOf(s.b.Reload()), Vault: vaultOf(s.b.Vault())}
}
