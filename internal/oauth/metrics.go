package oauth

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the token layer's Prometheus collectors; labels name groups,
// never credentials' values.
type Metrics struct {
	refreshes *prometheus.CounterVec
	hits      *prometheus.CounterVec
	misses    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_token_refreshes_total",
			Help: "Access token requests to token endpoints, by account group and result (success, failure).",
		}, []string{"group", "result"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_token_cache_hits_total",
			Help: "Access tokens served from the cache, by account group.",
		}, []string{"group"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_token_cache_misses_total",
			Help: "Access token requests that needed a refresh, by account group.",
		}, []string{"group"}),
	}
	if reg != nil {
		reg.MustRegister(m.refreshes, m.hits, m.misses)
	}
	return m
}
