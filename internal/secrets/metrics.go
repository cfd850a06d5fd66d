package secrets

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the secrets package's Prometheus collectors.
type Metrics struct {
	up         prometheus.Gauge
	tokenTTL   prometheus.Gauge
	logins     *prometheus.CounterVec
	renewals   prometheus.Counter
	rotations  *prometheus.CounterVec
	writeBacks *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_vault_up",
			Help: "1 when the last Vault request succeeded, 0 while Vault is unreachable or sealed.",
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
			Help: "Secret values replaced while running, by source (vault, provider).",
		}, []string{"source"}),
		writeBacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_refresh_token_writebacks_total",
			Help: "Rotated refresh tokens stored back, by result (stored, conflict, failed, not_writable).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.tokenTTL, m.logins, m.renewals, m.rotations, m.writeBacks)
	}
	return m
}
