package relay

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the submission side's Prometheus collectors. Labels carry
// names from the configuration, never message content or credentials.
type Metrics struct {
	messages          *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	activeSessions    *prometheus.GaugeVec
	authFailures      *prometheus.CounterVec
	circuitRejections *prometheus.CounterVec
	limitRejections   *prometheus.CounterVec
	refused           *prometheus.CounterVec
	spilled           prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_messages_total",
			Help: "Messages by account group, account, provider and result (delivered, deferred = 4xx to the client, rejected = 5xx, dry_run).",
		}, []string{"group", "account", "provider", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "oauthrelay_delivery_duration_seconds",
			Help:    "Time from MAIL FROM to the provider's reply to the message, by provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"provider"}),
		activeSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "oauthrelay_active_sessions",
			Help: "Client SMTP sessions in progress, by listener.",
		}, []string{"listener"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_auth_failures_total",
			Help: "Failed local SMTP AUTH attempts, by listener.",
		}, []string{"listener"}),
		circuitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_circuit_rejections_total",
			Help: "Messages refused at once (451 4.4.1) because a circuit was open, by scope (account, provider).",
		}, []string{"scope"}),
		limitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_limit_rejections_total",
			Help: "Messages or recipients refused by an account's sending limit, by account and limit.",
		}, []string{"account", "limit"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_messages_refused_total",
			Help: "Messages refused while they were received, before anything was sent upstream, by listener and reason (too_large, line_too_long, storage_full, header_too_large, header_malformed).",
		}, []string{"listener", "reason"}),
		spilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_messages_spilled_total",
			Help: "Messages held in an encrypted temporary file because the memory budget for messages (message_memory_limit) was used up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.duration, m.activeSessions, m.authFailures, m.circuitRejections, m.limitRejections, m.refused, m.spilled)
	}
	return m
}

// ForgetAccount removes an account's series (a domain-wide account's
// mailbox that made room for another), so that the series do not grow
// with every mailbox ever used.
func (m *Metrics) ForgetAccount(account string) {
	m.messages.DeletePartialMatch(prometheus.Labels{"account": account})
	m.limitRejections.DeletePartialMatch(prometheus.Labels{"account": account})
}

// resultOf names the outcome of a message by the reply code the client got.
func resultOf(code int) string {
	switch code / 100 {
	case 2:
		return "delivered"
	case 4:
		return "deferred"
	}
	return "rejected"
}
