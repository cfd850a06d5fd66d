package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
)

// The rows of the store-and-forward scenarios.
const (
	queueAcceptName = "queue accept (fsync'd before 250)"
	queueE2EName    = "queue end-to-end (delivered)"
)

// drainTimeout bounds the wait for the queue to deliver what it accepted;
// a delivery that failed waits for the retry schedule (1 minute first),
// so the bench reports it as undelivered instead of waiting.
const drainTimeout = 2 * time.Minute

// queueSettings configure the store-and-forward relay.
type queueSettings struct {
	storeDir string
	workers  int // queue { workers }; 0: the relay's default
	// postgres, when set, is the DSN of a database the relay shares with
	// instances-1 others, instead of the embedded store in storeDir.
	postgres  string
	instances int
	name      string // tells the configuration files of the instances apart
}

// queueResult is what the store-and-forward scenarios measured besides
// their rows: the group commit (messages per fsync) and how the queue
// drained.
type queueResult struct {
	// Workers is queue { workers } in the relay's configuration.
	Workers int `json:"queue_workers"`
	// Accepted counts the 250s of the measured period; Delivered the
	// messages the sandbox provider received from the first MAIL of that
	// period until the last delivery (Window).
	Accepted      int     `json:"accepted"`
	Delivered     int     `json:"delivered"`
	Undelivered   int     `json:"undelivered"`
	WindowSeconds float64 `json:"first_accept_to_last_delivery_seconds"`
	// DrainSeconds is how long the last delivery came after the last 250.
	DrainSeconds float64 `json:"drain_after_last_accept_seconds"`

	// Fsyncs: fsync(2) and fdatasync(2) calls of the relay during the
	// accept period (all of the store's writes: enqueues, and the workers'
	// claims and finishes running beside them) and over the whole window.
	Fsyncs         int     `json:"fsyncs_accept_period,omitempty"`
	MsgsPerFsync   float64 `json:"accepted_msgs_per_fsync,omitempty"`
	FsyncsWindow   int     `json:"fsyncs_whole_window,omitempty"`
	FsyncsPerMsg   float64 `json:"fsyncs_per_delivered_msg,omitempty"`
	FsyncsCounted  string  `json:"fsyncs_counted_by"` // how, or why they were not
	StoreCommits   float64 `json:"store_commits_accept_period,omitempty"`
	MsgsPerCommit  float64 `json:"store_msgs_per_commit,omitempty"`
	CommitsCounted string  `json:"store_commits_counted_by"`

	Accept   scenario `json:"-"`
	EndToEnd scenario `json:"-"`
}

// The store's commit counters, when the relay exports them: each commit
// of the SQLite store (WAL, synchronous=FULL) is one fsync of the WAL.
const (
	commitsMetric   = "oauthrelay_store_commits_total"
	committedMetric = "oauthrelay_store_enqueued_messages_total"
)

// queueRun measures a `delivery = "queue"` listener in front of the same
// account and pool as the direct relay: how fast it answers 250 with every
// message committed and fsync'd first, while its workers deliver beside
// it, and how fast the provider then receives the messages.
// Its rows are named with label at the end; client is how the clients
// send.
func queueRun(bin, dir string, sb *devsandbox.Sandbox, caFile string, clients int, d time.Duration, workers int, label string, client func(addr string) sendFn) (queueResult, error) {
	res := queueResult{Workers: workers}
	if workers == 0 {
		res.Workers = config.DefaultQueueWorkers
	}
	rt := sb.Tokens.IssueRefreshToken(clientID, account, config.GoogleScope)
	cfgPath, addr, tel := relayConfig(sb, caFile, rt, dir, 1, "warn", &queueSettings{storeDir: filepath.Join(dir, "store"), workers: workers})
	p, err := startRelayAt(bin, cfgPath, addr)
	if err != nil {
		return res, err
	}
	defer p.stop()
	p.telemetry = tel

	base := markSandbox(sb) // quiet: the direct relay has stopped
	var stored atomic.Int64 // 250s, the warm-up's included
	viaQueue := client(addr)
	send := func(st *clientState) error {
		err := viaQueue(st)
		if err == nil {
			stored.Add(1)
		}
		return err
	}
	var (
		warm   int
		warmed sandboxMark
		m      *queueMeters
	)
	warmedUp := func() {
		// The warm-up's messages are delivered before the clock starts,
		// so that the window holds only the measured ones.
		warm = int(stored.Load())
		if _, err := awaitDelivered(sb, base, warm, drainTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "  queue warm-up:", err)
		}
		warmed = markSandbox(sb) // quiet again until the clients start
		m = startMeters(p, d)
	}
	res.Accept = measureAfter(queueAcceptName+label, clients, d, p, send, warmedUp)
	res.Accepted = res.Accept.Messages
	m.acceptDone(&res)

	want := int(stored.Load()) - warm
	msgs, drainErr := awaitDelivered(sb, warmed, want, drainTimeout)
	if drainErr != nil {
		fmt.Fprintln(os.Stderr, "  queue drain:", drainErr)
	}
	res.EndToEnd = endToEnd(res.Accept, msgs, p, m.cpu0, m.bench0)
	res.EndToEnd.Name = queueE2EName + label
	res.Delivered = res.EndToEnd.Messages
	res.Undelivered = max(0, want-res.Delivered)
	res.EndToEnd.Errors = res.Undelivered
	res.WindowSeconds = res.EndToEnd.end.Sub(res.Accept.start).Seconds()
	res.DrainSeconds = max(0, res.EndToEnd.end.Sub(res.Accept.end).Seconds())
	m.windowDone(&res)
	fmt.Fprintf(os.Stderr, "  %-40s %8.0f msgs/s  (%d delivered, %d undelivered, drained %.1f s after the last 250)\n",
		res.EndToEnd.Name, res.EndToEnd.PerSecond, res.Delivered, res.Undelivered, res.DrainSeconds)
	return res, nil
}

// queueMeters count what the relay does from the start of the accept
// period: fsyncs until its end and until the last delivery, store
// commits, CPU.
type queueMeters struct {
	p              *relayProc
	accept, window *syscallCounter
	acceptFsyncs   int
	err            error // why fsyncs are not counted
	commits0       map[string]float64
	cpu0, bench0   float64
}

func startMeters(p *relayProc, d time.Duration) *queueMeters {
	m := &queueMeters{p: p}
	m.accept, m.err = countFsyncs(p.cmd.Process.Pid)
	if m.err == nil {
		m.window, m.err = countFsyncs(p.cmd.Process.Pid)
	}
	m.commits0, _ = scrapeCounters(p.telemetry, commitsMetric, committedMetric)
	m.cpu0, m.bench0 = p.cpuSeconds(), selfCPUSeconds()
	if prof := os.Getenv("BENCH_QUEUE_CPU_PROFILE"); prof != "" {
		// With OAUTHRELAY_PPROF=1 in the environment, profile the queue
		// relay while it accepts (and delivers beside).
		go profile(p.telemetry, prof, d-time.Second)
	}
	return m
}

// acceptDone ends the accept period's counts.
func (m *queueMeters) acceptDone(res *queueResult) {
	commits1, _ := scrapeCounters(m.p.telemetry, commitsMetric, committedMetric)
	res.countedCommits(m.commits0, commits1)
	if m.accept != nil {
		n, err := m.accept.stop()
		m.acceptFsyncs = n
		if m.err == nil {
			m.err = err
		}
	}
}

// windowDone ends the counts of the whole window, after the last delivery.
func (m *queueMeters) windowDone(res *queueResult) {
	n, err := 0, m.err
	if m.window != nil {
		var werr error
		n, werr = m.window.stop()
		if err == nil {
			err = werr
		}
	}
	res.countedFsyncs(err, m.acceptFsyncs, n)
}

// endToEnd is the delivered rate: the messages the provider received
// (msgs, in arrival order) from the start of the accept period — its
// first MAIL, a little before its first 250 — until the last of them
// arrived; with the relay's CPU over that window.
func endToEnd(accept scenario, msgs []devsandbox.Message, p *relayProc, cpu0, bench0 float64) scenario {
	s := scenario{Name: queueE2EName, Clients: accept.Clients, Messages: len(msgs), start: accept.start, end: accept.start}
	for _, m := range msgs {
		if m.Received.After(s.end) {
			s.end = m.Received
		}
	}
	window := s.end.Sub(s.start).Seconds()
	if window <= 0 || len(msgs) == 0 {
		return s
	}
	s.PerSecond = float64(len(msgs)) / window
	relayCPU := p.cpuSeconds() - cpu0
	s.CPUSecondsPer1000 = relayCPU / float64(len(msgs)) * 1000
	s.RelayCores, s.BenchCores = relayCPU/window, (selfCPUSeconds()-bench0)/window
	s.RelayRSSMB = p.rssMB()
	return s
}

func (r *queueResult) countedFsyncs(err error, accept, window int) {
	if err != nil {
		r.FsyncsCounted = "n/a: " + err.Error()
		return
	}
	r.FsyncsCounted = "perf stat, tracepoints syscalls:sys_enter_fsync and sys_enter_fdatasync of the relay process"
	r.Fsyncs, r.FsyncsWindow = accept, window
	if accept > 0 {
		r.MsgsPerFsync = float64(r.Accepted) / float64(accept)
	}
	if r.Delivered > 0 {
		r.FsyncsPerMsg = float64(window) / float64(r.Delivered)
	}
}

func (r *queueResult) countedCommits(before, after map[string]float64) {
	_, had := before[commitsMetric]
	_, has := after[commitsMetric]
	if !had || !has {
		r.CommitsCounted = "n/a: the relay does not export " + commitsMetric + " and " + committedMetric
		return
	}
	r.CommitsCounted = commitsMetric + ", " + committedMetric
	r.StoreCommits = after[commitsMetric] - before[commitsMetric]
	if r.StoreCommits > 0 {
		r.MsgsPerCommit = (after[committedMetric] - before[committedMetric]) / r.StoreCommits
	}
}

// sandboxMark is how many messages and MAIL commands the sandbox
// provider had received at a moment when no delivery was under way.
type sandboxMark struct{ messages, mails int }

func markSandbox(sb *devsandbox.Sandbox) sandboxMark {
	return sandboxMark{messages: len(sb.SMTP.Messages()), mails: sb.SMTP.MailCommands()}
}

// awaitDelivered waits until the sandbox holds want messages after the
// mark and returns those (more, if more came). Messages() copies every
// message of the run, so it is polled only once the cheap MAIL count says
// the deliveries are about done (every message takes a MAIL; a failed
// transaction only ends that first wait early).
func awaitDelivered(sb *devsandbox.Sandbox, mark sandboxMark, want int, timeout time.Duration) ([]devsandbox.Message, error) {
	deadline := time.Now().Add(timeout)
	for sb.SMTP.MailCommands()-mark.mails < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for {
		msgs := sb.SMTP.Messages()[mark.messages:]
		if len(msgs) >= want {
			return msgs, nil
		}
		if time.Now().After(deadline) {
			return msgs, fmt.Errorf("%d of %d messages delivered after %s", len(msgs), want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queueTargets are the issue's goals for store-and-forward on the
// embedded store.
func queueTargets(q queueResult, accept, e2e scenario) []target {
	return []target{
		{"queue accept ≥ 1.0× the provider directly (connection reuse), fsync'd before 250", fmt.Sprintf("%.2f×", accept.RelayRatio), accept.RelayRatio >= 1},
		{"queue accept ≥ 1.0× the relay in direct mode (connection reuse), fsync'd before 250", fmt.Sprintf("%.2f×", accept.ModeRatio), accept.ModeRatio >= 1},
		{"queue accept p99 < 20 ms at 16 clients", fmt.Sprintf("%.2f ms", accept.P99ms), accept.P99ms < 20},
		{"queue end-to-end delivered ≥ 0.5× the provider directly (connection reuse)", fmt.Sprintf("%.2f×", e2e.RelayRatio), e2e.RelayRatio >= 0.5},
		{"queue end-to-end delivered ≥ 0.5× the relay in direct mode (connection reuse)", fmt.Sprintf("%.2f×", e2e.ModeRatio), e2e.ModeRatio >= 0.5},
		{"queue: no errors, every accepted message delivered", fmt.Sprintf("%d errors, %d undelivered", accept.Errors, q.Undelivered), accept.Errors == 0 && q.Undelivered == 0},
	}
}

func printQueue(q queueResult) {
	fmt.Printf("\nqueue rows (%d queue workers): ratio to \"direct, connection reuse\" (the provider); to the relay in direct mode: accept %.2f×, end-to-end %.2f×; latency = MAIL to the 250 after DATA, as above\n",
		q.Workers, q.Accept.ModeRatio, q.EndToEnd.ModeRatio)
	fmt.Printf("end-to-end: %d delivered in %.2f s from the first MAIL to the last delivery (drained %.2f s after the last 250)\n",
		q.Delivered, q.WindowSeconds, q.DrainSeconds)
	if q.MsgsPerFsync > 0 {
		fmt.Printf("messages per fsync while accepting: %.1f (%d accepted, %d fsyncs); fsyncs per delivered message end to end: %.2f\n",
			q.MsgsPerFsync, q.Accepted, q.Fsyncs, q.FsyncsPerMsg)
	} else {
		fmt.Printf("messages per fsync: %s\n", q.FsyncsCounted)
	}
	if q.MsgsPerCommit > 0 {
		fmt.Printf("store commits while accepting: %.0f, %.1f messages per commit\n", q.StoreCommits, q.MsgsPerCommit)
	} else {
		fmt.Printf("store commits: %s\n", q.CommitsCounted)
	}
}
