package upstream

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the upstream's Prometheus collectors.
type Metrics struct {
	replies     *prometheus.CounterVec
	connections *prometheus.GaugeVec
	dials       *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_upstream_replies_total",
			Help: "Replies from providers' SMTP servers, by provider, command stage and code class (2xx, 4xx, 5xx).",
		}, []string{"provider", "stage", "class"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "oauthrelay_upstream_connections",
			Help: "Open upstream SMTP connections, by provider and state (in_use, idle).",
		}, []string{"provider", "state"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_upstream_dials_total",
			Help: "Upstream connection attempts, by provider and result (success, connect_error, auth_error, token_error).",
		}, []string{"provider", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.replies, m.connections, m.dials)
	}
	return m
}

func (m *Metrics) reply(provider string, stage Stage, code int) {
	m.replies.WithLabelValues(provider, string(stage), strconv.Itoa(code/100)+"xx").Inc()
}
