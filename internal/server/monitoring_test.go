package server_test

import (
	"context"
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
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

var metricName = regexp.MustCompile(`oauthrelay_[a-z0-9_]+`)

// TestMonitoringExamplesUseExportedMetrics checks the Grafana dashboard and
// the alert rules against the metrics the relay registers.
func TestMonitoringExamplesUseExportedMetrics(t *testing.T) {
	h := newHarness(t, harnessOptions{})
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
	for _, must := range []string{"oauthrelay_refresh_token_failing", "oauthrelay_config_last_reload_successful", "oauthrelay_vault_token_ttl_seconds", "oauthrelay_circuit_state", "oauthrelay_quota_usage_ratio"} {
		if !strings.Contains(string(alerts), must) {
			t.Errorf("alerts.yml has no rule on %s", must)
		}
	}
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
// install without Vault), a failed reload fires ConfigReloadFailed, and a
// relay whose Vault went away fires VaultDown.
func TestMonitoringAlertRulesOnScrapedMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: install the Debian package prometheus (.ci/run does)")
	}
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
	rules, err := filepath.Abs("../../examples/monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
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
			dir := t.TempDir()
			testFile := testutil.WriteFile(t, dir, "alerts_test.yml", promtoolTest(t, rules, scrape, tc.firing))
			out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput()
			if err != nil {
				t.Errorf("promtool test rules: %v\n%s", err, out)
			}
		})
	}
}

var alertName = regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)

// promtoolTest writes a promtool unit test: the scraped samples as input
// series, constant for an hour, and every alert of the rules file expected
// to fire (checked through the ALERTS series) or to stay silent.
func promtoolTest(t *testing.T, rulesFile, scrape string, firing []string) string {
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
	for _, s := range scrapeSeries(scrape) {
		fmt.Fprintf(&b, "      - series: %q\n        values: %q\n", s.series, s.value+"+0x60")
	}
	b.WriteString("    alert_rule_test:\n")
	names := alertName.FindAllStringSubmatch(string(rules), -1)
	if len(names) < 5 {
		t.Fatalf("found %d alerts in %s", len(names), rulesFile)
	}
	for _, m := range names {
		if !fires[m[1]] {
			fmt.Fprintf(&b, "      - eval_time: 30m\n        alertname: %s\n        exp_alerts: []\n", m[1])
		}
	}
	if len(firing) > 0 {
		b.WriteString("    promql_expr_test:\n")
	}
	for _, name := range firing {
		fmt.Fprintf(&b, "      - expr: count(ALERTS{alertname=%q, alertstate=\"firing\"})\n        eval_time: 30m\n        exp_samples:\n          - labels: '{}'\n            value: 1\n", name)
	}
	return b.String()
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
