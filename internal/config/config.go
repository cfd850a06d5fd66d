// Package config reads oauthrelay's HCL configuration (README "Configuration
// reference"): it decodes the files, applies provider presets and defaults,
// and validates everything it can without talking to the network. Every
// problem is an hcl.Diagnostic with a source range, so operators get
// file:line:col.
package config

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is a fully decoded, defaulted and validated configuration.
type Config struct {
	Server    Server
	Telemetry Telemetry
	// Vault is nil when the configuration has no vault block.
	Vault *Vault
	// Store is nil when the configuration has no store block: nothing is
	// kept durably and every listener delivers directly.
	Store *Store
	// Queue always holds the queue settings, defaulted when the
	// configuration has no queue block.
	Queue Queue
	// Admin is nil when the configuration has no admin block: no
	// operator console.
	Admin     *Admin
	Listeners []*Listener
	Providers map[string]*Provider
	Groups    []*AccountGroup
	// Files are the source files the configuration was read from.
	Files []string
	// hostFiles are the files the configuration names (CA bundles,
	// certificates), read by CheckHost and never by Load.
	hostFiles []hostFile
}

// Server holds process-wide settings.
type Server struct {
	Hostname          string
	LogLevel          string
	LogFormat         string // "text" or "json"
	ShutdownTimeout   time.Duration
	WatchConfig       bool
	GlobalConcurrency int // 0 = unlimited
	DryRun            bool
	// RetiredSessionTimeout is how long sessions opened before a reload
	// may go on; then idle ones are closed (421) and must reconnect.
	RetiredSessionTimeout time.Duration
	// ReceivedHideClient leaves the client's IP address out of the
	// Received header.
	ReceivedHideClient bool
	// MessageMemoryLimit bounds the bytes all messages in flight hold in
	// memory together; beyond it a message spills to an encrypted file in
	// SpoolDir (the system's temporary directory when empty), or, with
	// SpillToDisk off, is refused with 452 4.3.1.
	MessageMemoryLimit int64
	SpillToDisk        bool
	SpoolDir           string
}

// Telemetry configures the HTTP endpoint for metrics and health.
type Telemetry struct {
	Address                  string // empty: no telemetry listener
	ReadyRequiresAllAccounts bool
	// AddressRange is where address was written, for diagnostics.
	AddressRange hcl.Range
}

// TLS modes of a listener.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
)

// Delivery modes of a listener (README "listener").
const (
	// DeliveryDirect answers 250 only once the provider accepted the
	// message.
	DeliveryDirect = "direct"
	// DeliveryQueue answers 250 once the message is stored durably, then
	// delivers it in the background with retries (needs a store block).
	DeliveryQueue = "queue"
)

// Listener is one local SMTP submission endpoint.
type Listener struct {
	Name    string
	Address string
	TLSMode string
	// Delivery is DeliveryDirect or DeliveryQueue.
	Delivery string
	// TLSCertFile and TLSKeyFile are PEM files read at start and reload;
	// TLSCert and TLSKey are the same as secret references instead, served
	// as their current value (rotations apply without restart). One pair
	// or the other is set unless TLSMode is "none".
	TLSCertFile       string
	TLSKeyFile        string
	TLSCert           SecretRef
	TLSKey            SecretRef
	AllowInsecureAuth bool
	// MinTLSVersion is the lowest TLS version the listener accepts
	// (tls.VersionTLS10 … tls.VersionTLS13; default TLS 1.2).
	MinTLSVersion  uint16
	MaxMessageSize int64
	// MaxLineLength bounds one line of a message or command; a longer
	// message line is refused with 554 5.6.0.
	MaxLineLength int64
	MaxRecipients int
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	// MaxConnectionsPerIP caps concurrent connections from one client
	// address (0: no cap).
	MaxConnectionsPerIP int
	// MaxAuthFailures failed AUTH attempts from one client address within
	// AuthFailureWindow make further attempts fail temporarily (0: off).
	MaxAuthFailures   int
	AuthFailureWindow time.Duration
	DefRange          hcl.Range
	// AddressRange is where address was written, for diagnostics.
	AddressRange hcl.Range
	body         hcl.Body
}

// Vault configures the HashiCorp Vault client used for vault:// references.
type Vault struct {
	Address       string
	Namespace     string
	CAFile        string
	TLSServerName string
	PollInterval  time.Duration
	Auth          VaultAuth
	DefRange      hcl.Range
}

// VaultAuth is the single auth method of the vault block.
type VaultAuth struct {
	Method string // "token", "approle", "kubernetes", "aws"
	// token
	Token SecretRef
	// approle
	RoleID, SecretID SecretRef
	// SecretIDWrapped says SecretID is a response-wrapping token to unwrap.
	SecretIDWrapped bool
	MountPath       string
	// kubernetes (and aws: Role)
	Role                    string
	ServiceAccountTokenPath string
	// aws (IAM): the STS region signed for, and the
	// X-Vault-AWS-IAM-Server-ID header value.
	Region, HeaderValue string
}

// Store configures durable state: the embedded SQLite database, delivery
// history and the queue.
type Store struct {
	// Path is the absolute, cleaned directory of the embedded database.
	Path string
	// HistoryRetention is how long delivery history is kept.
	HistoryRetention time.Duration
	// HistorySubjects keeps each message's Subject header in its history
	// record (off by default: subjects are often personal data). It
	// applies at reload, to the messages accepted from then on.
	HistorySubjects bool
	// Transit is nil when queued bodies are stored as they are.
	Transit *Transit
	// Postgres, instead of Path, keeps the state in a PostgreSQL database
	// that several instances share.
	Postgres *Postgres
	DefRange hcl.Range
	// PathRange is where path was written, for diagnostics.
	PathRange hcl.Range
}

// Postgres is the shared PostgreSQL database of several instances
// (README "Several instances").
type Postgres struct {
	// DSN is the connection string (a secret reference: it may hold a
	// password); without user and password when VaultCredentials is set.
	DSN SecretRef
	// VaultCredentials is the path of a Vault database secrets engine's
	// credentials ("database/creds/oauthrelay"): the relay connects as the
	// dynamic users it issues, renewed and rotated without a restart.
	VaultCredentials string
	// Role, when set, is taken with SET ROLE on every connection, so that
	// the tables belong to one role whatever user logs in.
	Role string
	// ExpectedInstances divides every limit while the database is
	// unreachable: each instance then keeps its share.
	ExpectedInstances int
	// MaxConnections caps the instance's connections to the database.
	MaxConnections int
	DefRange       hcl.Range
}

// Transit encrypts queued message bodies with a key of Vault's Transit
// secrets engine (needs the vault block).
type Transit struct {
	Mount    string // without leading or trailing slashes
	Key      string
	DefRange hcl.Range
}

// Queue configures store-and-forward delivery: the retries of a queued
// message and the bounce (RFC 3464 delivery status notification) that ends
// them.
type Queue struct {
	// MaxLifetime is how long a message may wait; then its pending
	// recipients bounce.
	MaxLifetime time.Duration
	// RetrySchedule is the wait before each retry, in order; the last
	// step repeats. Non-empty and non-decreasing.
	RetrySchedule []time.Duration
	// Workers is the number of concurrent deliveries.
	Workers int
	// MaxBouncesPerHour caps the delivery status notifications sent to
	// one sender address per hour.
	MaxBouncesPerHour int
	// DelayWarning is how long a recipient that asked for delay notices
	// (DSN NOTIFY=DELAY) waits before its sender gets one.
	DelayWarning time.Duration
	// Lease is how long a claim on a message lasts; 0: the default
	// (DefaultQueueLease, or DefaultSharedQueueLease on PostgreSQL).
	Lease time.Duration
	// DefRange is the queue block's, zero when the block is omitted.
	DefRange hcl.Range
}

// Presets of a provider.
const (
	PresetGoogle    = "google"
	PresetMicrosoft = "microsoft"
	PresetCustom    = "custom"
)

// Authentication flows of an account group.
const (
	FlowRefreshToken      = "refresh_token"
	FlowClientCredentials = "client_credentials"
	FlowServiceAccount    = "service_account"
)

// SASL mechanisms for the upstream.
const (
	MechXOAUTH2     = "XOAUTH2"
	MechOAUTHBEARER = "OAUTHBEARER"
)

// Provider is an upstream mail provider with its token endpoint.
type Provider struct {
	Name   string
	Preset string
	Tenant string
	// TokenURL, SMTPAddress and SMTPTLS have the preset's values unless
	// overridden.
	TokenURL string
	// AuthURL and DeviceCodeURL serve `oauthrelay account authorize`
	// (browser with loopback redirect, and device code flow).
	AuthURL       string
	DeviceCodeURL string
	// Transport is TransportSMTP, TransportGraph or TransportGmailAPI;
	// GraphURL and GmailAPIURL are the endpoints of the HTTP ones (set
	// for the transport in use only; without a trailing slash).
	Transport   string
	GraphURL    string
	GmailAPIURL string
	SMTPAddress string
	SMTPTLS     string // "starttls" or "implicit"
	// TLSServerName overrides the name checked in the upstream certificate
	// (default: the host of SMTPAddress).
	TLSServerName string
	CAFile        string
	// Scopes set explicitly; when empty the preset's scopes for the group's
	// flow apply (see AccountGroup.Scopes).
	Scopes        []string
	AuthMechanism string
	// ConnectTimeout bounds dial + TLS + greeting; CommandTimeout each
	// SMTP command; TokenTimeout one token endpoint request.
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	TokenTimeout   time.Duration
	// Pool bounds the upstream connections of each account.
	Pool PoolConfig
	// Circuit configures the per-provider and per-account breakers.
	Circuit CircuitConfig
	// Limits are the defaults for the provider's accounts.
	Limits   Limits
	DefRange hcl.Range
}

// PoolConfig bounds the pooled upstream connections of one account.
type PoolConfig struct {
	MaxConnections           int // 0: no cap
	MaxMessagesPerConnection int // 0: no cap
	IdleTimeout              time.Duration
	MaxAge                   time.Duration
	WaitTimeout              time.Duration
}

// CircuitConfig configures the circuit breakers of a provider and of its
// accounts.
type CircuitConfig struct {
	// FailureThreshold consecutive failures open an account's circuit.
	FailureThreshold int
	OpenTimeout      time.Duration
	// The provider's circuit opens when, within Window and after at least
	// MinRequests outcomes, FailureRatio of them were the provider's own
	// failures or FailureRatio of its active accounts were failing.
	Window       time.Duration
	MinRequests  int
	FailureRatio float64
}

// Limits protect a mailbox from the provider's sending limits; 0 means
// no limit.
type Limits struct {
	RateLimitPerMinute      int
	RateLimitBurst          int
	DailyMessageLimit       int
	DailyRecipientLimit     int
	MaxRecipientsPerMessage int
}

// AccountGroup is a set of mailboxes that share an OAuth client and
// the local clients allowed to send through them.
type AccountGroup struct {
	Name              string
	ProviderName      string
	Provider          *Provider
	Flow              string
	ClientID          string
	ClientSecret      SecretRef
	ServiceAccountKey SecretRef
	// ClientCertificate and ClientPrivateKey are an Entra application's
	// certificate credential (PEM), used instead of ClientSecret to sign
	// client assertions (RFC 7523 §2.2).
	ClientCertificate SecretRef
	ClientPrivateKey  SecretRef
	// Scopes requested from the token endpoint (provider override, else the
	// preset's scopes for this flow).
	Scopes []string
	// RefreshBeforeExpiry is how long before expiry an access token is
	// replaced.
	RefreshBeforeExpiry time.Duration
	// TokenErrorBackoff is how long a permanent token error (invalid_grant,
	// invalid_client) is remembered before the endpoint is asked again.
	TokenErrorBackoff time.Duration
	// WriteBack stores refresh tokens rotated by the provider back into
	// Vault.
	WriteBack bool
	Accounts  []*Account
	Clients   []*Client
	DefRange  hcl.Range
}

// Account is one upstream mailbox the relay sends as.
type Account struct {
	// Address is the mailbox (lower-cased), or "*@" + Domain for a
	// domain-wide account.
	Address string
	// Domain is set for a domain-wide account: it sends as every mailbox
	// of the domain, each with its own limits, pool and history.
	Domain string
	// MaxMailboxes bounds the mailboxes a domain-wide account serves at
	// once (each has limits, a pool and circuits in memory).
	MaxMailboxes int
	Group        *AccountGroup
	RefreshToken SecretRef
	// Limits are the account's own values where set, else its provider's.
	Limits Limits
	// MaxConnections overrides the provider's pool size for this account.
	MaxConnections int
	DefRange       hcl.Range
}

// Client is a local identity: a device or application that submits mail,
// recognised by SMTP AUTH (PasswordHash), by the address it connects from
// (Networks), or both (README "Devices").
type Client struct {
	Name  string
	Group *AccountGroup
	// PasswordHash is empty for a client recognised by its networks only;
	// such a client cannot AUTH.
	PasswordHash string
	// AllowedSenders are lower-cased addresses the client may send as:
	// accounts, addresses of a domain-wide account, or a domain-wide
	// account's "*@domain" (every address of it).
	AllowedSenders []string
	// Networks are the networks whose hosts are this client without AUTH.
	Networks []ClientNetwork
	// SendAs, when set, is the account every message of the client is
	// sent as: envelope sender and From header rewritten (lower case).
	SendAs   string
	DefRange hcl.Range
	// AllowedSendersRange and SendAsRange are where those were written
	// (zero when not), for diagnostics made after every group is read.
	AllowedSendersRange, SendAsRange hcl.Range
}

// ClientNetwork is one entry of a client's networks.
type ClientNetwork struct {
	Prefix netip.Prefix // masked
	Range  hcl.Range    // where it was written
}

// Accounts returns every account of every group.
func (c *Config) Accounts() []*Account {
	var out []*Account
	for _, g := range c.Groups {
		out = append(out, g.Accounts...)
	}
	return out
}

// Clients returns every local client of every group.
func (c *Config) Clients() []*Client {
	var out []*Client
	for _, g := range c.Groups {
		out = append(out, g.Clients...)
	}
	return out
}

// SecretRefs returns every secret reference in the configuration, the
// Vault login credentials excepted.
func (c *Config) SecretRefs() []SecretRef {
	var out []SecretRef
	for _, l := range c.Listeners {
		for _, r := range []SecretRef{l.TLSCert, l.TLSKey} {
			if r.IsSet() {
				out = append(out, r)
			}
		}
	}
	for _, g := range c.Groups {
		out = append(out, g.CredentialRefs()...)
		for _, a := range g.Accounts {
			if a.RefreshToken.IsSet() {
				out = append(out, a.RefreshToken)
			}
		}
	}
	if c.Store != nil && c.Store.Postgres != nil && c.Store.Postgres.DSN.IsSet() {
		out = append(out, c.Store.Postgres.DSN)
	}
	if c.Admin != nil {
		out = append(out, c.Admin.Refs()...)
	}
	return out
}

// CredentialRefs returns the group's client credentials that are set:
// client_secret, service_account_key, client_certificate and
// client_private_key. A change of any of them invalidates the tokens of
// the group's accounts. The slice is the caller's to append to.
func (g *AccountGroup) CredentialRefs() []SecretRef {
	var out []SecretRef
	for _, r := range []SecretRef{g.ClientSecret, g.ServiceAccountKey, g.ClientCertificate, g.ClientPrivateKey} {
		if r.IsSet() {
			out = append(out, r)
		}
	}
	return out
}
