package runtime_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
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
