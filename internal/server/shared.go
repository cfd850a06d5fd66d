package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
)

// sharedLimitsHealth is the "limits" entry of /health/ready when instances
// share one database: whether the limits are shared right now or the
// instance runs on its share of them (README "Failure modes"). nil
// without a shared database. Running on its share keeps the relay ready:
// direct mode goes on; it is reported as degraded.
func (r *Runtime) sharedLimitsHealth() (status map[string]any, degraded bool) {
	co := r.deps.coord
	if co == nil {
		return nil, false
	}
	degraded, err := co.Degraded()
	status = map[string]any{"shared": !degraded, "expected_instances": co.Instances()}
	if degraded && err != nil {
		status["error"] = err.Error()
	}
	return status, degraded
}

// sharedStore reports whether cfg's store is a database several instances
// share.
func sharedStore(cfg *config.Config) bool {
	return cfg.Store != nil && cfg.Store.Postgres != nil
}

// registerCoordinationMetrics exports the state of the shared limits.
func registerCoordinationMetrics(reg prometheus.Registerer, co *limits.Coordination) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "oauthrelay_shared_limits_degraded",
			Help: "1 while the shared database is unreachable and this instance enforces its share (1/expected_instances) of every limit alone.",
		}, func() float64 {
			if d, _ := co.Degraded(); d {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "oauthrelay_shared_limits_fallbacks_total",
			Help: "Reservations and connection slots this instance took on its own share because the shared database was unreachable.",
		}, func() float64 { return float64(co.Fallbacks()) }),
	)
}
