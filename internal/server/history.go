package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// historyWriter keeps the delivery history of directly delivered
// messages without slowing the sessions down: entries are buffered and
// written in batches (one commit for many messages); when the store falls
// behind by more than the buffer, entries are dropped and counted — the
// mail itself never waits for its history. It also prunes the history
// older than store { history_retention }.
type historyWriter struct {
	st      store.Store
	log     hclog.Logger
	entries chan historyEntry
	dropped prometheus.Counter
	failed  prometheus.Counter
	// lastDropLog is when a drop was last logged (unix nanoseconds).
	lastDropLog atomic.Int64
	// pruneEvery is historyPruneEvery when the writer was made.
	pruneEvery time.Duration
	// subjects is store { history_subjects }, applied at reload.
	subjects atomic.Bool

	mu        sync.Mutex
	retention time.Duration
	done      chan struct{}
}

type historyEntry struct {
	rec    *store.Record
	events []*store.Event
}

const (
	historyBuffer = 8192
	historyBatch  = 512
)

// historyPruneEvery is how often the writer prunes after its first pass
// at start. A variable only so that tests can shorten it (export_test.go);
// each writer reads it once, when it is made.
var historyPruneEvery = time.Hour

func newHistoryWriter(st store.Store, retention time.Duration, log hclog.Logger, reg prometheus.Registerer) *historyWriter {
	h := &historyWriter{
		st: st, log: log, retention: retention, pruneEvery: historyPruneEvery,
		entries: make(chan historyEntry, historyBuffer),
		done:    make(chan struct{}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_history_dropped_total",
			Help: "Delivery history entries of directly delivered messages not recorded because the store fell behind (the messages themselves were not affected).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oauthrelay_history_write_failures_total",
			Help: "Batches of delivery history the store refused.",
		}),
	}
	if reg != nil {
		reg.MustRegister(h.dropped, h.failed)
	}
	return h
}

// Record implements relay.History; it never blocks. A subject recorded
// while history_subjects was being turned off is dropped here.
func (h *historyWriter) Record(rec *store.Record, events ...*store.Event) {
	if !h.subjects.Load() {
		rec.Subject = ""
	}
	select {
	case h.entries <- historyEntry{rec, events}:
	default:
		h.dropped.Inc()
		// Logged at most once a minute: the store is falling behind.
		now := time.Now().UnixNano()
		if last := h.lastDropLog.Load(); now-last > int64(time.Minute) && h.lastDropLog.CompareAndSwap(last, now) {
			h.log.Warn("delivery history entries dropped: the store is falling behind (the messages are not affected)", "dropped_total_metric", "oauthrelay_history_dropped_total")
		}
	}
}

// Subjects implements relay.History: whether records keep the message's
// Subject (history_subjects).
func (h *historyWriter) Subjects() bool { return h.subjects.Load() }

// setRetention applies a reloaded history_retention.
func (h *historyWriter) setRetention(d time.Duration) {
	h.mu.Lock()
	h.retention = d
	h.mu.Unlock()
}

// run writes batches until ctx ends, then writes what is buffered.
func (h *historyWriter) run(ctx context.Context) {
	defer close(h.done)
	prune := time.NewTicker(h.pruneEvery)
	defer prune.Stop()
	h.prune()
	for {
		select {
		case e := <-h.entries:
			h.write(e)
		case <-prune.C:
			h.prune()
		case <-ctx.Done():
			for {
				select {
				case e := <-h.entries:
					h.write(e)
				default:
					return
				}
			}
		}
	}
}

// write writes e and whatever else is waiting, up to a batch.
func (h *historyWriter) write(first historyEntry) {
	recs := []*store.Record{first.rec}
	events := first.events
	for len(recs) < historyBatch {
		select {
		case e := <-h.entries:
			recs = append(recs, e.rec)
			events = append(events, e.events...)
			continue
		default:
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.st.Record(ctx, recs, events); err != nil {
		h.failed.Inc()
		h.log.Warn("delivery history not recorded", "messages", len(recs), "error", err.Error())
	}
}

func (h *historyWriter) prune() {
	h.mu.Lock()
	retention := h.retention
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := h.st.Prune(ctx, time.Now().Add(-retention))
	if err != nil {
		h.log.Warn("pruning the delivery history failed", "error", err.Error())
		return
	}
	if n > 0 {
		h.log.Info("pruned the delivery history", "messages", n, "older_than", retention.String())
	}
}
