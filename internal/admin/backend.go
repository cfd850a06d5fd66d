// Package admin serves the operator console: the admin API (/api/v1,
// JSON, bearer tokens with read and admin scopes) and the web dashboard
// (server-rendered HTML with a little embedded CSS and JS) on their own
// listener, and the queue operations that `oauthrelay queue` shares with
// them (README "Operator console").
//
// The runtime (internal/server) implements Backend; the package knows
// nothing of SMTP, pools or Vault beyond the status values below.
package admin

import (
	"context"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Backend is what the console reads and acts on. Every method is safe for
// concurrent use and returns quickly (status values are snapshots held in
// memory; only Store calls reach the database).
type Backend interface {
	// Store is the durable store, nil when the configuration has no
	// store block (then the history and queue pages and endpoints say
	// so: 503 from the API).
	Store() Store
	// Info describes the running relay.
	Info() Info
	// Accounts lists every account (domain-wide accounts' open mailboxes
	// included), sorted by address.
	Accounts(ctx context.Context) []Account
	// Reload is the last reload's outcome and the running configuration.
	Reload() ReloadStatus
	// TriggerReload reads the configuration again and applies it, as
	// SIGHUP does; the error is the reload's (the running configuration
	// stays in effect on error).
	TriggerReload(ctx context.Context) error
	// Vault is the Vault client's state; Configured is false without a
	// vault block.
	Vault() VaultStatus
}

// Store is the part of store.Store the console uses (store.Store
// implements it).
type Store interface {
	QueueStore
	// Search returns history records q selects, newest first.
	Search(ctx context.Context, q store.HistoryQuery) ([]*store.Record, error)
	Stats(ctx context.Context) (*store.Stats, error)
}

// QueueStore is what the queue operations need: the `oauthrelay queue`
// command and the console both act through Ops on it.
type QueueStore interface {
	Get(ctx context.Context, id string) (*store.Envelope, error)
	List(ctx context.Context, f store.Filter) ([]*store.Envelope, error)
	Hold(ctx context.Context, id string) error
	Release(ctx context.Context, id string) error
	Retry(ctx context.Context, id string, now time.Time) error
	Delete(ctx context.Context, id string) error
	History(ctx context.Context, id string) (*store.Record, []*store.Event, error)
}

// Info describes the running relay for the overview.
type Info struct {
	Version   string
	Hostname  string
	Started   time.Time
	Listeners []Listener
	// HistorySubjects is the store's history_subjects setting: subjects
	// are shown only when it is on (they are not stored otherwise).
	HistorySubjects bool
	// HistoryRetention is how long the history is kept (0: no store).
	HistoryRetention time.Duration
	// Store names the engine: "sqlite", "postgres" or "" (none).
	Store string
	// SharedLimits is "" on one instance; "ok" or "degraded" when limits
	// are shared through PostgreSQL.
	SharedLimits string
	// QueueMaxLifetime is the queue's max_lifetime: the console shows
	// each queued message's expiry under it, as `oauthrelay queue` does
	// (0: the stored expiry).
	QueueMaxLifetime time.Duration
}

// Listener is one SMTP listener.
type Listener struct {
	Name     string
	Address  string
	Delivery string // "direct" or "queue"
	TLSMode  string // "none", "starttls", "implicit"
	Sessions int    // sessions open now
}

// Account is one account's health (README "Health").
type Account struct {
	Address   string
	Group     string
	Provider  string
	Transport string // "smtp", "graph", "gmail_api"
	// TokenState is not_requested, valid or failing.
	TokenState  string
	TokenExpiry time.Time // zero when no token
	LastRefresh time.Time
	LastError   string // the token's or the last delivery's error, no secrets
	// Circuit is closed, half-open or open ("" when the account has no
	// circuit of its own).
	Circuit string
	// QuotaUsed is the share used of each rolling quota, by name
	// ("messages_per_day": 0.42).
	QuotaUsed map[string]float64
	// Pool: the account's upstream connections (SMTP) or requests in
	// flight (Graph, Gmail API).
	Pool Pool
	// Queued counts this account's queued and held messages (from the
	// store's stats; 0 without a store).
	Queued, Held int
}

// Pool is an account's connections to its provider.
type Pool struct {
	Open, Idle, Max int // Max 0: no cap
}

// ReloadStatus is the configuration's state.
type ReloadStatus struct {
	ConfigPath string
	// Loaded is when the running configuration was applied (start or the
	// last successful reload).
	Loaded time.Time
	// LastAttempt, LastOK and LastError describe the last reload tried
	// (zero LastAttempt: none since the start).
	LastAttempt time.Time
	LastOK      bool
	LastError   string
	// Diagnostics are the last load's warnings and errors, each as
	// "file:line:col: summary: detail".
	Diagnostics []string
	Reloads     int // successful reloads since the start
}

// VaultStatus is the Vault client's state.
type VaultStatus struct {
	Configured    bool
	Address       string
	AuthMethod    string // "token", "approle", "kubernetes", "aws"
	Authenticated bool
	TokenExpiry   time.Time // zero: no expiry (root or periodic token)
	LastError     string
	// Secrets are the secret references read from Vault, by reference
	// ("vault://secret/oauthrelay/m365#refresh_token"), never a value.
	Secrets []VaultSecret
}

// VaultSecret is one Vault secret reference the relay follows.
type VaultSecret struct {
	Ref       string
	Version   int
	LastRead  time.Time
	LastError string
}
