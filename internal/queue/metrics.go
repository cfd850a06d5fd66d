package queue

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Stats are refreshed from the store every statsInterval, and after a
// change at most every statsMinGap.
const (
	statsInterval = 5 * time.Second
	statsMinGap   = time.Second
)

// metrics are the queue's Prometheus collectors. The only address in a
// label is the account's.
type metrics struct {
	attempts    *prometheus.CounterVec
	postponed   *prometheus.CounterVec
	bounces     prometheus.Counter
	suppressed  *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
	inFlight    prometheus.Gauge
	enqueued    *prometheus.CounterVec
	handedOver  prometheus.Counter
	depth       *depthCollector
}

func newMetrics(reg prometheus.Registerer, q *Queue) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_queue_attempts_total",
			Help: "Delivery attempts of queued messages, by result: delivered (every recipient tried was accepted), deferred (some wait for a retry), failed (some failed for good).",
		}, []string{"result"}),
		postponed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_queue_postponed_total",
			Help: "Queued messages postponed without an attempt because the account was not available now, by reason (limit, circuit, busy).",
		}, []string{"reason"}),
		bounces: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_queue_bounces_total",
			Help: "Delivery-status notifications queued to senders of failed messages.",
		}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_queue_bounces_suppressed_total",
			Help: "Delivery-status notifications not sent, by reason (bounce: about a notification; null_sender; notify: NOTIFY excludes failures; rate: the sender's hourly cap; declined, error, disabled: the notifier).",
		}, []string{"reason"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_queue_store_errors_total",
			Help: "Failed store operations of the queue, by operation.",
		}, []string{"op"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_queue_deliveries_in_flight",
			Help: "Deliveries of queued messages in progress.",
		}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_queue_enqueued_total",
			Help: "Messages stored by queue listeners, by account.",
		}, []string{"account"}),
		handedOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_queue_handed_over_total",
			Help: "Stored messages handed to a free worker at once, from memory (the rest wait for a claim). Divided by oauthrelay_queue_enqueued_total: the share that never waited.",
		}),
		depth: &depthCollector{
			now: func() time.Time { return q.now() },
			depth: prometheus.NewDesc("oauthrelay_queue_depth",
				"Queued messages by state (queued, held) and account.", []string{"state", "account"}, nil),
			oldest: prometheus.NewDesc("oauthrelay_queue_oldest_age_seconds",
				"Age of the oldest queued (not held) message; 0 when the queue is empty.", nil, nil),
		},
	}
	// The known label values exist from the start at 0, so that
	// increase() in alert rules sees their first event.
	for _, r := range []string{"delivered", "deferred", "failed"} {
		m.attempts.WithLabelValues(r)
	}
	for _, r := range []string{"limit", "circuit", "busy"} {
		m.postponed.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.postponed, m.bounces, m.suppressed, m.storeErrors, m.inFlight, m.enqueued, m.handedOver, m.depth)
	}
	return m
}

// depthCollector exports the last Stats read from the store.
type depthCollector struct {
	now           func() time.Time
	depth, oldest *prometheus.Desc

	mu    sync.Mutex
	stats *store.Stats
}

func (d *depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.depth
	ch <- d.oldest
}

func (d *depthCollector) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	st := d.stats
	d.mu.Unlock()
	age := 0.0
	if st != nil {
		for k, n := range st.Depth {
			ch <- prometheus.MustNewConstMetric(d.depth, prometheus.GaugeValue, float64(n), k.State, k.Account)
		}
		if !st.Oldest.IsZero() {
			age = max(d.now().Sub(st.Oldest).Seconds(), 0)
		}
	}
	ch <- prometheus.MustNewConstMetric(d.oldest, prometheus.GaugeValue, age)
}

func (d *depthCollector) set(st *store.Stats) {
	d.mu.Lock()
	d.stats = st
	d.mu.Unlock()
}

// refreshStats reads the store's Stats on a ticker and soon after changes.
func (q *Queue) refreshStats(ctx context.Context) {
	defer close(q.statsDone)
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	for {
		q.readStats(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(statsMinGap):
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-q.dirty:
		}
	}
}

func (q *Queue) readStats(ctx context.Context) {
	st, err := q.st.Stats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			q.storeError("stats")
			q.log.Debug("could not read the queue's statistics", "error", err)
		}
		return
	}
	q.m.depth.set(st)
}

// ForgetAccount removes an account's series (a domain-wide account's
// mailbox that made room for another).
func (q *Queue) ForgetAccount(account string) {
	if q.m != nil {
		q.m.enqueued.DeleteLabelValues(account)
	}
}
