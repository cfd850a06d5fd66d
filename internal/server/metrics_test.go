package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestMetricsAndHealth scrapes /metrics and /health around a message and a
// failure, and checks that the documented series exist and move.
func TestMetricsAndHealth(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true})
	h.mustSend(appClient, alice)
	h.sb.Tokens.RevokeRefreshToken(h.rts[bob])
	if _, err := h.send(appClient, bob); err == nil {
		t.Fatal("bob's revoked token should fail")
	}
	_, _ = h.send(appClient, "nobody@example.com")
	_, _ = testSendWrongPassword(h)
	// The relay ends a session after the client went away: await it.
	testutil.WaitFor(t, 10*time.Second, "the sessions to end", func() bool {
		return h.metric(`oauthrelay_active_sessions{listener="test"}`) == 0
	})

	for series, want := range map[string]float64{
		`oauthrelay_messages_total{account="alice@example.com",group="delegated",provider="sandbox",result="delivered"}`: 1,
		`oauthrelay_messages_total{account="bob@example.com",group="delegated",provider="sandbox",result="deferred"}`:    1,
		`oauthrelay_delivery_duration_seconds_count{provider="sandbox"}`:                                                 1,
		`oauthrelay_upstream_replies_total{class="2xx",provider="sandbox",stage="data"}`:                                 1,
		`oauthrelay_token_refreshes_total{group="delegated",result="success"}`:                                           1,
		`oauthrelay_token_refreshes_total{group="delegated",result="failure"}`:                                           1,
		`oauthrelay_token_cache_misses_total{group="delegated"}`:                                                         2,
		`oauthrelay_refresh_token_failing{account="bob@example.com",group="delegated"}`:                                  1,
		`oauthrelay_refresh_token_failing{account="alice@example.com",group="delegated"}`:                                0,
		`oauthrelay_auth_failures_total{listener="test"}`:                                                                1,
		`oauthrelay_upstream_connections{provider="sandbox",state="in_use"}`:                                             0,
		`oauthrelay_active_sessions{listener="test"}`:                                                                    0,
		`oauthrelay_config_last_reload_successful`:                                                                       1,
		`oauthrelay_config_reloads_total{result="success"}`:                                                              0,
	} {
		if got := h.metric(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, present := range []string{
		`oauthrelay_access_token_expiry_timestamp_seconds{account="alice@example.com",group="delegated"}`,
		`oauthrelay_token_last_refresh_success_timestamp_seconds{account="alice@example.com",group="delegated"}`,
		`oauthrelay_config_last_reload_success_timestamp_seconds`,
		`oauthrelay_sessions_rejected_total`,
	} {
		if h.metric(present) <= -1 {
			t.Errorf("%s is missing", present)
		}
	}
	body := h.scrape()
	if !strings.Contains(body, `oauthrelay_build_info{goversion="go`) {
		t.Error("oauthrelay_build_info is missing")
	}
	for _, secret := range h.secrets {
		if strings.Contains(body, secret) {
			t.Error("/metrics contains a secret value")
		}
	}

	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ready struct {
		Status   string `json:"status"`
		Accounts map[string]struct {
			TokenState string `json:"token_state"`
			LastError  string `json:"last_error"`
		} `json:"accounts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || ready.Status != "degraded" {
		t.Errorf("/health/ready = %d %q, want 200 degraded", resp.StatusCode, ready.Status)
	}
	if a := ready.Accounts[alice]; a.TokenState != "valid" {
		t.Errorf("alice = %+v", a)
	}
	if b := ready.Accounts[bob]; b.TokenState != "failing" || !strings.Contains(b.LastError, "invalid_grant") {
		t.Errorf("bob = %+v", b)
	}
	live, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/live")
	if err != nil || live.StatusCode != 200 {
		t.Errorf("/health/live: %v", err)
	}
	live.Body.Close()
}

func TestReadyRequiresAllAccounts(t *testing.T) {
	h := newHarness(t, harnessOptions{extraConfig: "telemetry { \n address = \"127.0.0.1:0\"\n ready_requires_all_accounts = true\n}\n"})
	h.sb.Tokens.RevokeRefreshToken(h.rts[bob])
	_, _ = h.send(appClient, bob)
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health/ready = %d, want 503 while an account fails", resp.StatusCode)
	}
}

func testSendWrongPassword(h *harness) (string, error) {
	p := h.password
	h.password = "wrong"
	defer func() { h.password = p }()
	return h.send(appClient, alice)
}
