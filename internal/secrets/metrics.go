package secrets

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the secrets package's Prometheus collectors.
type Metrics struct {
	up         prometheus.Gauge
	tokenTTL   prometheus.Gauge
	logins     *prometheus.CounterVec
	renewals   prometheus.Counter
	rotations  *prometheus.CounterVec
	writeBacks *prometheus.CounterVec

	// Dynamic database credentials (DatabaseCredentials), by the Vault
	// path they are read from; never by user name.
	dbLeaseExpiry  *prometheus.GaugeVec
	dbRenewals     *prometheus.CounterVec
	dbRotations    *prometheus.CounterVec
	dbReadFailures *prometheus.CounterVec
	// A reload's credentials run beside their predecessor for the same
	// path until it is closed: the newest alone sets the path's expiry.
	dbMu          sync.Mutex
	dbExpiryOwner map[string]*int

	vaultExported atomic.Pointer[func() bool]
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_vault_up",
			Help: "1 when the last Vault request succeeded, 0 while Vault is unreachable or sealed. Absent without a vault block.",
		}),
		tokenTTL: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_vault_token_ttl_seconds",
			Help: "TTL of the relay's Vault token at its last login or renewal (0: no expiry).",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_vault_logins_total",
			Help: "Vault logins by result.",
		}, []string{"result"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_vault_token_renewals_total",
			Help: "Successful renewals of the relay's Vault token.",
		}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_secret_rotations_total",
			Help: "Secret values replaced while running, by source (vault, file, provider).",
		}, []string{"source"}),
		writeBacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_refresh_token_writebacks_total",
			Help: "Rotated refresh tokens stored back, by result (stored, conflict, failed, not_writable).",
		}, []string{"result"}),
		dbLeaseExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "oauthrelay_vault_database_lease_expiry_timestamp_seconds",
			Help: "When the lease of the database credentials in use ends (Unix time), by Vault path.",
		}, []string{"path"}),
		dbRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_vault_database_lease_renewals_total",
			Help: "Renewals of the database credentials' lease, by Vault path and result (success, failure).",
		}, []string{"path", "result"}),
		dbRotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_vault_database_credential_rotations_total",
			Help: "Database credentials replaced by new ones from Vault, by Vault path and reason (max_ttl, not_renewable, renewal_failed, relogin).",
		}, []string{"path", "reason"}),
		dbReadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_vault_database_credential_read_failures_total",
			Help: "Failed reads of new database credentials from Vault, by Vault path (each is retried).",
		}, []string{"path"}),
		dbExpiryOwner: map[string]*int{},
	}
	if reg != nil {
		reg.MustRegister(vaultCollector{m}, m.rotations, m.writeBacks)
	}
	return m
}

// ExportVaultWhen makes the Vault metrics appear only while configured()
// holds (a vault block is in the running configuration). Without Vault a
// constant oauthrelay_vault_up 0 would fire every "Vault down" alert;
// absent, it fires none. Until this is called they are always exported.
func (m *Metrics) ExportVaultWhen(configured func() bool) { m.vaultExported.Store(&configured) }

// vaultCollector exports the Vault metrics, or nothing when Vault is not
// configured. It always describes them, so that they are known to be
// exported (the monitoring examples are checked against that list).
type vaultCollector struct{ m *Metrics }

func (c vaultCollector) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.m.up, c.m.tokenTTL, c.m.logins, c.m.renewals,
		c.m.dbLeaseExpiry, c.m.dbRenewals, c.m.dbRotations, c.m.dbReadFailures}
}

// Describe implements prometheus.Collector.
func (c vaultCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, col := range c.collectors() {
		col.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c vaultCollector) Collect(ch chan<- prometheus.Metric) {
	if configured := c.m.vaultExported.Load(); configured != nil && !(*configured)() {
		return
	}
	for _, col := range c.collectors() {
		col.Collect(ch)
	}
}
