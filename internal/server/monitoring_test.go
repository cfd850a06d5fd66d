package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

var metricName = regexp.MustCompile(`oauthrelay_[a-z0-9_]+`)

// TestMonitoringExamplesUseExportedMetrics checks the Grafana dashboard and
// the alert rules against the metrics the relay registers. The relay has a
// store and a queue listener, without which the queue, store and history
// metrics do not exist.
func TestMonitoringExamplesUseExportedMetrics(t *testing.T) {
	h := newHarness(t, queueOptions(t.TempDir(), harnessOptions{}))
	exported := map[string]bool{}
	for _, n := range h.rt.MetricNames() {
		exported[n] = true
	}
	if len(exported) < 20 {
		t.Fatalf("only %d metrics registered: %v", len(exported), h.rt.MetricNames())
	}
	dash, err := os.ReadFile("../../examples/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var parsed map[string]any
	if err := json.Unmarshal(dash, &parsed); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	alerts, err := os.ReadFile("../../examples/monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for file, text := range map[string]string{"grafana-dashboard.json": string(dash), "alerts.yml": string(alerts)} {
		used := metricName.FindAllString(text, -1)
		if len(used) == 0 {
			t.Errorf("%s uses no metric", file)
		}
		for _, name := range used {
			base := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("%s uses %s, which the relay does not export", file, name)
			}
		}
	}
	for _, must := range []string{"oauthrelay_refresh_token_failing", "oauthrelay_config_last_reload_successful", "oauthrelay_vault_token_ttl_seconds", "oauthrelay_circuit_state", "oauthrelay_quota_usage_ratio",
		"oauthrelay_queue_depth", "oauthrelay_queue_oldest_age_seconds", "oauthrelay_queue_attempts_total", "oauthrelay_queue_postponed_total",
		"oauthrelay_queue_bounces_total", "oauthrelay_queue_store_errors_total", "oauthrelay_history_dropped_total", "oauthrelay_history_write_failures_total"} {
		if !strings.Contains(string(alerts), must) {
			t.Errorf("alerts.yml has no rule on %s", must)
		}
	}
	// Every queue and history metric has a panel: the queue is where mail
	// waits, and an operator looks there first.
	for name := range exported {
		if (strings.HasPrefix(name, "oauthrelay_queue_") || strings.HasPrefix(name, "oauthrelay_history_")) && !strings.Contains(string(dash), name) {
			t.Errorf("the dashboard has no panel on %s", name)
		}
	}
}

// TestMonitoringDashboardQueriesParse has promtool check every query of
// the dashboard as PromQL (Grafana's $__rate_interval stands for 5m).
func TestMonitoringDashboardQueriesParse(t *testing.T) {
	promtool, _ := promtoolAndRules(t)
	raw, err := os.ReadFile("../../examples/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			n++
			fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %q\n", n, strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m"))
		}
	}
	file := testutil.WriteFile(t, t.TempDir(), "dashboard_rules.yml", b.String())
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries (%d) do not all parse: %v\n%s", n, err, out)
	}
}

// queueOptions makes the harness's listener store and forward, with the
// store in dir.
func queueOptions(dir string, o harnessOptions) harnessOptions {
	o.listenerExtra = "max_connections_per_ip = 0\n  delivery = \"queue\""
	o.extraConfig += fmt.Sprintf("store { path = %q }\n", dir)
	return o
}

// readyBody is the part of /health/ready the monitoring tests read.
type readyBody struct {
	Status string `json:"status"`
	Config struct {
		LoadedAt   time.Time  `json:"loaded_at"`
		LastResult string     `json:"last_reload_result"`
		LastTime   *time.Time `json:"last_reload_time"`
		LastError  string     `json:"last_reload_error"`
	} `json:"config"`
	Vault *struct {
		Up bool `json:"up"`
	} `json:"vault"`
	Store *storeHealth `json:"store"`
}

// storeHealth is the "store" object of /health/ready.
type storeHealth struct {
	Up           bool   `json:"up"`
	Error        string `json:"error"`
	Queued       *int   `json:"queued"`
	Held         *int   `json:"held"`
	OldestQueued *int   `json:"oldest_queued_seconds"`
}

func (h *harness) ready() (int, readyBody) {
	h.t.Helper()
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body readyBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestMetricsStartupIsNotAReload checks the configuration lifecycle as
// /metrics and /health/ready show it: the start-up load is no reload; a
// failed reload shows in both, while readiness stays (the old
// configuration serves).
func TestMetricsStartupIsNotAReload(t *testing.T) {
	started := time.Now().Truncate(time.Second)
	h := newHarness(t, harnessOptions{telemetry: true})
	for series, want := range map[string]float64{
		`oauthrelay_config_reloads_total{result="success"}`: 0,
		`oauthrelay_config_reloads_total{result="failure"}`: 0,
		`oauthrelay_config_last_reload_successful`:          1,
	} {
		if got := h.metric(series); got != want {
			t.Errorf("after start-up %s = %v, want %v", series, got, want)
		}
	}
	if ts := h.metric(`oauthrelay_config_last_reload_success_timestamp_seconds`); ts < float64(started.Unix()) {
		t.Errorf("last success timestamp %v is before the start (%v)", ts, started.Unix())
	}
	if code, body := h.ready(); code != http.StatusOK || body.Config.LastResult != "none" || body.Config.LoadedAt.Before(started) {
		t.Errorf("/health/ready after start-up = %d %+v", code, body.Config)
	}

	h.rewrite(h.cfgText + "\nlistener \"broken\" {\n")
	if err := h.rt.Reload(context.Background()); err == nil {
		t.Fatal("a broken configuration reloaded")
	}
	if got := h.metric(`oauthrelay_config_reloads_total{result="failure"}`); got != 1 {
		t.Errorf("failed reloads = %v", got)
	}
	code, body := h.ready()
	if code != http.StatusOK || body.Status != "ready" {
		t.Errorf("/health/ready after a failed reload = %d %q; want 200 ready (the previous configuration serves)", code, body.Status)
	}
	if body.Config.LastResult != "failure" || body.Config.LastTime == nil || body.Config.LastTime.Before(started) {
		t.Errorf("/health/ready does not show the failed reload: %+v", body.Config)
	}
}

// TestMonitoringAlertRulesOnScrapedMetrics evaluates the shipped alert
// rules with `promtool test rules` over what real relays export: a
// healthy relay without Vault fires nothing (no "Vault down" for an
// install without Vault, no queue alert without a store), a failed reload
// fires ConfigReloadFailed, and a relay whose Vault went away fires
// VaultDown.
func TestMonitoringAlertRulesOnScrapedMetrics(t *testing.T) {
	promtool, rules := promtoolAndRules(t)
	tests := []struct {
		name   string
		vault  bool
		setup  func(t *testing.T, h *harness, vs *testutil.VaultServer)
		firing []string
	}{
		{name: "healthy without Vault"},
		{name: "healthy with Vault", vault: true},
		{name: "failed reload", setup: func(t *testing.T, h *harness, _ *testutil.VaultServer) {
			h.rewrite("not hcl {")
			if err := h.rt.Reload(context.Background()); err == nil {
				t.Fatal("a broken configuration reloaded")
			}
		}, firing: []string{"OAuthRelayConfigReloadFailed"}},
		{name: "Vault down", vault: true, setup: func(t *testing.T, h *harness, vs *testutil.VaultServer) {
			vs.Stop()
			testutil.WaitFor(t, 10*time.Second, "oauthrelay_vault_up to drop", func() bool { return h.metric("oauthrelay_vault_up") == 0 })
		}, firing: []string{"OAuthRelayVaultDown"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := harnessOptions{telemetry: true}
			var vs *testutil.VaultServer
			if tc.vault {
				vs = testutil.StartVault(t)
				o.vault, o.pollInterval = vs, "200ms"
			}
			h := newHarness(t, o)
			if tc.setup != nil {
				tc.setup(t, h, vs)
			}
			scrape := h.scrape()
			if has := strings.Contains(scrape, "oauthrelay_vault_up"); has != tc.vault {
				t.Errorf("oauthrelay_vault_up exported: %v, want %v (only with a vault block)", has, tc.vault)
			}
			if strings.Contains(scrape, "oauthrelay_queue_") {
				t.Error("queue metrics exported by a relay without a store block")
			}
			if _, body := h.ready(); body.Store != nil {
				t.Errorf("/health/ready of a relay without a store block has a store: %+v", body.Store)
			}
			runPromtool(t, promtool, rules, []snapshot{{0, scrape}}, 30, tc.firing)
		})
	}
}

// TestMonitoringQueueAlerts evaluates the queue, store and history alerts
// over what relays with a store and a queue listener export while
// something happens to them: each case scrapes the relay at steps of what
// it does and places the scrapes minutes apart on promtool's clock, so
// that rates and `for` durations see mail arrive, wait, bounce or fail to
// be stored.
func TestMonitoringQueueAlerts(t *testing.T) {
	promtool, rules := promtoolAndRules(t)
	tests := []struct {
		name          string
		providerExtra string
		// direct adds a listener "direct" that delivers directly.
		direct bool
		// seed runs before the relay starts, on its store directory.
		seed func(t *testing.T, dir string)
		// run drives the relay and returns its scrapes and the minute at
		// which the alerts are evaluated.
		run    func(t *testing.T, q *queueHarness) ([]snapshot, int)
		firing []string
	}{
		{name: "healthy", run: healthyQueue},
		// Mail waits for one recipient the provider defers while the
		// rest is delivered: the queue moves, nothing fires.
		{name: "moving", run: movingQueue},
		{
			// The provider refuses every message with 451: the account's
			// circuit opens (and stays open) and the queue postpones the
			// account's mail while more arrives every 5 minutes.
			name:          "stuck",
			providerExtra: "circuit_failure_threshold = 3\n  circuit_open_timeout = \"1h\"",
			run:           stuckQueue,
			firing:        []string{"OAuthRelayQueueGrowing", "OAuthRelayQueueStuck", "OAuthRelayQueuePostponed", "OAuthRelayCircuitOpen"},
		},
		{
			// Without a circuit in the way the queue keeps trying, and
			// every attempt is deferred.
			name:          "deferred",
			providerExtra: "circuit_failure_threshold = 1000",
			run:           stuckQueue,
			firing:        []string{"OAuthRelayQueueGrowing", "OAuthRelayQueueStuck"},
		},
		// Evaluated at minute 10: the message has waited over an hour
		// (OAuthRelayQueueDelayed, for 5m), but the relay has not yet
		// been 30 minutes without a delivery (OAuthRelayQueueStuck).
		{name: "old message", seed: seedOldMessage, run: oldMessage, firing: []string{"OAuthRelayQueueDelayed"}},
		{name: "bouncing", run: bouncingQueue, firing: []string{"OAuthRelayQueueBouncing"}},
		{name: "store locked", direct: true, run: lockedStore, firing: []string{"OAuthRelayStoreErrors", "OAuthRelayHistoryNotRecorded"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.seed != nil {
				tc.seed(t, dir)
			}
			o := queueOptions(dir, harnessOptions{telemetry: true, providerExtra: tc.providerExtra})
			if tc.direct {
				o.extraConfig += fmt.Sprintf("listener \"direct\" {\n  address = %q\n  tls_mode = \"none\"\n  max_connections_per_ip = 0\n}\n", testutil.FreeAddr(t))
			}
			q := &queueHarness{harness: newHarness(t, o), dir: dir}
			snaps, eval := tc.run(t, q)
			runPromtool(t, promtool, rules, snaps, eval, tc.firing)
		})
	}
}

// queueHarness is a relay whose listener "test" queues (and whose
// listener "direct", if any, delivers directly).
type queueHarness struct {
	*harness
	dir  string // the store
	sent int    // messages that got 250 on the queue listener
}

const aliceQueued = `oauthrelay_queue_depth{account="alice@example.com",state="queued"}`

// queue sends n messages as alice to the queue listener.
func (q *queueHarness) queue(n int) {
	q.t.Helper()
	for range n {
		q.mustSend(appClient, alice)
		q.sent++
	}
}

// settle waits until the queue's statistics show want messages of alice
// waiting (-1: none) and no delivery is in flight.
func (q *queueHarness) settle(what string, want float64, more func() bool) {
	q.t.Helper()
	testutil.WaitFor(q.t, 30*time.Second, what, func() bool {
		return q.metric(aliceQueued) == want && q.metric("oauthrelay_queue_deliveries_in_flight") == 0 && (more == nil || more())
	})
}

// storeHealth returns /health/ready's store object, which a relay with a
// store block always has.
func (q *queueHarness) storeHealth() (int, *storeHealth) {
	q.t.Helper()
	code, body := q.ready()
	if body.Store == nil {
		q.t.Fatal("/health/ready of a relay with a store block has no store object")
	}
	return code, body.Store
}

// healthyQueue: mail arrives every 5 minutes and is delivered at once.
func healthyQueue(t *testing.T, q *queueHarness) ([]snapshot, int) {
	var snaps []snapshot
	for step := range 4 {
		q.queue(5)
		q.settle("the queue to deliver everything", -1, func() bool {
			return q.metric(`oauthrelay_queue_attempts_total{result="delivered"}`) == float64(q.sent)
		})
		snaps = append(snaps, snapshot{5 * step, q.scrape()})
	}
	if got := len(q.sb.SMTP.Messages()); got != q.sent {
		t.Errorf("the provider received %d messages, %d were queued", got, q.sent)
	}
	code, st := q.storeHealth()
	if code != http.StatusOK || !st.Up || st.Queued == nil || *st.Queued != 0 || st.OldestQueued != nil {
		t.Errorf("/health/ready of an empty queue = %d, store %+v", code, st)
	}
	return snaps, 30
}

// movingQueue: every 5 minutes for 35 minutes one message for a recipient
// the provider defers (451 at RCPT) joins the queue and five others are
// delivered. Evaluated at minute 47 like stuckQueue: mail has waited all
// along, but deliveries keep OAuthRelayQueueStuck silent.
func movingQueue(t *testing.T, q *queueHarness) ([]snapshot, int) {
	const deferred = "deferred@example.net"
	q.sb.SMTP.SetRcptReply(deferred, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Mailbox temporarily unavailable."})
	var snaps []snapshot
	for step := range 8 {
		q.mustSend(appClient, alice, deferred)
		q.queue(5)
		want := float64(5 * (step + 1))
		q.settle(fmt.Sprintf("%d messages to wait in the queue", step+1), float64(step+1), func() bool {
			return q.metric(`oauthrelay_queue_attempts_total{result="delivered"}`) == want
		})
		snaps = append(snaps, snapshot{5 * step, q.scrape()})
	}
	return snaps, 47
}

// stuckQueue: the provider refuses every message with 451 4.3.0 while 6
// more arrive every 5 minutes for 35 minutes. The queue passes 20 messages
// at minute 15 and grows until minute 35 (its 15-minute delta stays
// positive until minute 49), so OAuthRelayQueueGrowing (for 30m) fires
// from minute 45; mail waits and nothing is delivered from the start, so
// OAuthRelayQueueStuck (for 30m) fires from minute 30.
func stuckQueue(t *testing.T, q *queueHarness) ([]snapshot, int) {
	q.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mail server temporarily rejected message."})
	var snaps []snapshot
	for step := range 8 {
		q.queue(6)
		q.settle(fmt.Sprintf("%d messages to wait in the queue", q.sent), float64(q.sent), nil)
		snaps = append(snaps, snapshot{5 * step, q.scrape()})
	}
	if got := len(q.sb.SMTP.Messages()); got != 0 {
		t.Errorf("the provider accepted %d messages while refusing every one", got)
	}
	if v := q.metric(`oauthrelay_queue_attempts_total{result="delivered"}`); v > 0 {
		t.Errorf("delivered attempts = %v, want none", v)
	}
	code, st := q.storeHealth()
	if code != http.StatusOK || !st.Up || st.Queued == nil || *st.Queued != q.sent || st.OldestQueued == nil {
		t.Errorf("/health/ready with %d messages waiting = %d, store %+v", q.sent, code, st)
	}
	return snaps, 47
}

// oldMessage: the relay starts with a message that arrived two hours ago
// and waits for its next retry.
func oldMessage(t *testing.T, q *queueHarness) ([]snapshot, int) {
	q.settle("the queue's statistics to show the waiting message", 1, func() bool {
		return q.metric("oauthrelay_queue_oldest_age_seconds") >= 7200
	})
	code, st := q.storeHealth()
	if code != http.StatusOK || st.Queued == nil || *st.Queued != 1 || st.OldestQueued == nil || *st.OldestQueued < 7200 {
		t.Errorf("/health/ready with a two-hour-old message = %d, store %+v", code, st)
	}
	return []snapshot{{0, q.scrape()}}, 10
}

// seedOldMessage stores a message received two hours ago, tried four
// times and due again in half an hour, as a relay that was restarted
// finds it.
func seedOldMessage(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	msg := &store.NewMessage{Envelope: store.Envelope{
		ID: "old-message", Account: alice, Listener: "test", Client: appClient, From: alice,
		Rcpts: []store.Recipient{{Addr: "rcpt@example.net", State: store.RcptPending, LastReply: "451 4.3.0 Mail server temporarily rejected message."}},
		Size:  int64(len(oldBody)), Received: now.Add(-2 * time.Hour), Expires: now.Add(3 * 24 * time.Hour),
		NextAttempt: now.Add(30 * time.Minute), Attempts: 4, LastReply: "451 4.3.0 Mail server temporarily rejected message.",
		State: store.StateQueued,
	}, Body: strings.NewReader(oldBody)}
	if err := st.Enqueue(ctx, msg); err != nil {
		t.Fatal(err)
	}
}

const oldBody = "From: alice@example.com\r\nTo: rcpt@example.net\r\nSubject: waiting\r\n\r\nHello\r\n"

// bouncingQueue: the provider refuses every message for good; 15
// messages bounce between two scrapes 5 minutes apart.
func bouncingQueue(t *testing.T, q *queueHarness) ([]snapshot, int) {
	q.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected by policy."})
	snaps := []snapshot{{0, q.scrape()}}
	q.queue(15)
	q.settle("15 bounces", -1, func() bool { return q.metric("oauthrelay_queue_bounces_total") == 15 })
	// The notifications go to alice through alice, are refused too and
	// are not bounced again.
	if v := q.metric(`oauthrelay_queue_bounces_suppressed_total{reason="bounce"}`); v != 15 {
		t.Errorf("suppressed bounces of bounces = %v, want 15", v)
	}
	return append(snaps, snapshot{5, q.scrape()}), 10
}

// lockedStore: another process holds the database's write lock for
// longer than the store waits for it. A queued message gets 452 4.3.1,
// the history of a direct one is not recorded, and /health/ready reports
// the store down until the lock goes.
func lockedStore(t *testing.T, q *queueHarness) ([]snapshot, int) {
	q.queue(1)
	q.settle("the first message to be delivered", -1, nil)
	snaps := []snapshot{{0, q.scrape()}}

	unlock := lockStore(t, q.dir)
	queued := make(chan error, 1)
	go func() {
		_, err := q.send(appClient, alice)
		queued <- err
	}()
	direct := q.rt.ListenerAddr("direct").String()
	if _, err := testutil.Send(direct, testutil.Mail{User: appClient, Password: q.password, From: alice, To: []string{"rcpt@example.net"}}); err != nil {
		t.Errorf("direct delivery with the store locked: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "/health/ready to report the store down", func() bool {
		code, st := q.storeHealth()
		return code == http.StatusServiceUnavailable && !st.Up && st.Error != ""
	})
	testutil.WaitFor(t, 60*time.Second, "the store's failures to be counted", func() bool {
		return q.metric(`oauthrelay_queue_store_errors_total{op="enqueue"}`) >= 1 && q.metric("oauthrelay_history_write_failures_total") >= 1
	})
	if err := <-queued; testutil.Code(err) != "452 4.3.1" {
		t.Errorf("queued message with the store locked: %v, want 452 4.3.1", err)
	}
	unlock()
	testutil.WaitFor(t, 30*time.Second, "/health/ready to report the store up again", func() bool {
		code, st := q.storeHealth()
		return code == http.StatusOK && st.Up
	})
	return append(snaps, snapshot{5, q.scrape()}), 10
}

// lockStore takes the write lock of the store's database in dir, as
// another process would, until the returned function is called (or the
// test ends).
func lockStore(t *testing.T, dir string) func() {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		db.Close()
		t.Fatal(err)
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Error(err)
			}
			conn.Close()
			db.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// promtoolAndRules returns the promtool binary and the rules file, after
// promtool's own check of the rules (syntax, templates).
func promtoolAndRules(t *testing.T) (promtool, rules string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: install the Debian package prometheus (.ci/run does)")
	}
	rules, err = filepath.Abs("../../examples/monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	return promtool, rules
}

// runPromtool runs `promtool test rules` over the snapshots: the alerts
// in firing must fire at minute eval, every other alert must not.
func runPromtool(t *testing.T, promtool, rules string, snaps []snapshot, eval int, firing []string) {
	t.Helper()
	testFile := testutil.WriteFile(t, t.TempDir(), "alerts_test.yml", promtoolTest(t, rules, snaps, eval, firing))
	if out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}

var alertName = regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)

// snapshot is a /metrics page placed at a minute of promtool's clock.
type snapshot struct {
	minute int
	scrape string
}

// promtoolTest writes a promtool unit test: the snapshots as input series,
// each sample holding from its snapshot's minute until the next snapshot
// (one sample a minute, as a scrape interval of 1m), and every alert of
// the rules file expected to fire at minute eval (checked through the
// ALERTS series) or to stay silent.
func promtoolTest(t *testing.T, rulesFile string, snaps []snapshot, eval int, firing []string) string {
	t.Helper()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, name := range firing {
		fires[name] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rule_files:\n  - %q\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n", rulesFile)
	for _, s := range inputSeries(snaps, eval) {
		fmt.Fprintf(&b, "      - series: %q\n        values: %q\n", s.series, s.value)
	}
	b.WriteString("    alert_rule_test:\n")
	names := alertName.FindAllStringSubmatch(string(rules), -1)
	if len(names) < 5 {
		t.Fatalf("found %d alerts in %s", len(names), rulesFile)
	}
	known := map[string]bool{}
	for _, m := range names {
		known[m[1]] = true
		if !fires[m[1]] {
			fmt.Fprintf(&b, "      - eval_time: %dm\n        alertname: %s\n        exp_alerts: []\n", eval, m[1])
		}
	}
	if len(firing) > 0 {
		b.WriteString("    promql_expr_test:\n")
	}
	for _, name := range firing {
		if !known[name] {
			t.Fatalf("%s is not an alert of %s", name, rulesFile)
		}
		fmt.Fprintf(&b, "      - expr: count(ALERTS{alertname=%q, alertstate=\"firing\"}) > bool 0\n        eval_time: %dm\n        exp_samples:\n          - labels: '{}'\n            value: 1\n", name, eval)
	}
	return b.String()
}

// inputSeries turns snapshots into promtool input series up to minute end
// in promtool's notation: "_" before a series first appears, "stale" when
// it disappears (as Prometheus marks a series gone from a scrape), runs of
// one value as "v+0xN".
func inputSeries(snaps []snapshot, end int) []sample {
	var order []string
	seen := map[string]bool{}
	values := make([]map[string]string, len(snaps))
	for i, s := range snaps {
		values[i] = map[string]string{}
		for _, smp := range scrapeSeries(s.scrape) {
			if !seen[smp.series] {
				seen[smp.series] = true
				order = append(order, smp.series)
			}
			values[i][smp.series] = smp.value
		}
	}
	out := make([]sample, 0, len(order))
	for _, series := range order {
		var tokens []string
		present := false
		for minute := 0; minute <= end; minute++ {
			v, ok := valueAt(snaps, values, series, minute)
			switch {
			case ok:
				tokens, present = append(tokens, v), true
			case present:
				tokens, present = append(tokens, "stale"), false
			default:
				tokens = append(tokens, "_")
			}
		}
		out = append(out, sample{series, compress(tokens)})
	}
	return out
}

// valueAt is the series' value in the latest snapshot at or before minute.
func valueAt(snaps []snapshot, values []map[string]string, series string, minute int) (string, bool) {
	for i := len(snaps) - 1; i >= 0; i-- {
		if snaps[i].minute <= minute {
			v, ok := values[i][series]
			return v, ok
		}
	}
	return "", false
}

// compress writes runs of a repeated token in promtool's expanding
// notation.
func compress(tokens []string) string {
	var parts []string
	for i := 0; i < len(tokens); {
		j := i
		for j+1 < len(tokens) && tokens[j+1] == tokens[i] {
			j++
		}
		n := j - i + 1
		switch {
		case n == 1 || tokens[i] == "stale":
			for range n {
				parts = append(parts, tokens[i])
			}
		case tokens[i] == "_":
			parts = append(parts, fmt.Sprintf("_x%d", n))
		default:
			parts = append(parts, fmt.Sprintf("%s+0x%d", tokens[i], n-1))
		}
		i = j + 1
	}
	return strings.Join(parts, " ")
}

type sample struct{ series, value string }

// scrapeSeries turns a /metrics page into promtool input series, with the
// instance and job labels Prometheus adds. Samples that are not finite
// numbers (NaN quantiles of an empty summary) are left out.
func scrapeSeries(scrape string) []sample {
	var out []sample
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		series, value := line[:i], line[i+1:]
		if v, err := strconv.ParseFloat(value, 64); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		const target = `instance="relay:9100",job="oauthrelay"`
		if j := strings.IndexByte(series, '{'); j >= 0 {
			series = series[:j+1] + target + "," + series[j+1:]
		} else {
			series += "{" + target + "}"
		}
		out = append(out, sample{series, value})
	}
	return out
}
