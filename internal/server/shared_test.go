package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// sharedDatabase starts a PostgreSQL server of the test's own (the test
// stops it) with a password, and returns it and a DSN with that password.
func sharedDatabase(t *testing.T, password string) (*testutil.PostgresServer, string) {
	t.Helper()
	srv, err := testutil.StartPostgresServer(testutil.PostgresOptions{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	db, err := srv.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return srv, fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", srv.User, password, srv.Addr, db)
}

// readyLimits is the "limits" entry of /health/ready.
func readyLimits(t *testing.T, h *harness) (status string, limits map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string         `json:"status"`
		Limits map[string]any `json:"limits"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health/ready = %d (%s), want 200", resp.StatusCode, body.Status)
	}
	return body.Status, body.Limits
}

// TestSharedRateLimitAcrossInstances: two relays on one database admit an
// account's burst once between them, not once each; with the database
// gone each goes on alone with its share (1/expected_instances), says so
// in /health/ready, the metrics and the log, and never shows the
// database password.
func TestSharedRateLimitAcrossInstances(t *testing.T) {
	const dbPassword = "db-Pa55word-shared"
	srv, dsn := sharedDatabase(t, dbPassword)
	opts := harnessOptions{
		telemetry:   true,
		aliceExtra:  "rate_limit_per_minute = 4\n    rate_limit_burst = 2",
		extraConfig: fmt.Sprintf("store {\n  postgres {\n    dsn = %q\n    expected_instances = 2\n  }\n}\n", dsn),
	}
	a, b := newHarness(t, opts), newHarness(t, opts)
	a.start()
	b.start()
	accepted, limited := 0, 0
	for i := range 6 {
		h := a
		if i%2 == 1 {
			h = b
		}
		_, err := h.send(appClient, alice)
		switch {
		case err == nil:
			accepted++
		case strings.HasPrefix(testutil.Code(err), "451 4.7.0") && strings.Contains(err.Error(), "rate_per_minute"):
			limited++
		default:
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if accepted != 2 || limited != 4 {
		t.Fatalf("two instances with a shared burst of 2: %d accepted, %d limited; want 2 and 4", accepted, limited)
	}
	if got := len(a.sb.SMTP.Messages()) + len(b.sb.SMTP.Messages()); got != 2 {
		t.Fatalf("the provider got %d messages, want 2", got)
	}
	if status, l := readyLimits(t, a); status != "ready" || l["shared"] != true || l["expected_instances"] != float64(2) {
		t.Fatalf("/health/ready with the database up: %s, limits %v", status, l)
	}

	srv.Stop()
	// Each instance now has 1 of the burst of 2 to itself.
	for _, h := range []*harness{a, b} {
		if _, err := h.send(appClient, alice); err != nil {
			t.Fatalf("the instance's share with the database gone: %v", err)
		}
		if _, err := h.send(appClient, alice); !strings.HasPrefix(testutil.Code(err), "451 4.7.0") {
			t.Fatalf("beyond the instance's share: %v, want 451 4.7.0", err)
		}
		status, l := readyLimits(t, h)
		if status != "degraded" || l["shared"] != false || l["error"] == nil {
			t.Fatalf("/health/ready with the database gone: %s, limits %v", status, l)
		}
		if v := h.metric("oauthrelay_shared_limits_degraded"); v != 1 {
			t.Fatalf("oauthrelay_shared_limits_degraded = %v, want 1", v)
		}
		if n := strings.Count(h.logs.String(), "the database is unreachable"); n != 1 {
			t.Fatalf("the outage was logged %d times, want once", n)
		}
		testutil.AssertNoSecrets(t, "/metrics", h.scrape(), []string{dbPassword})
		h.secrets = append(h.secrets, dbPassword, dsn)
		h.stop()
		h.assertNoSecretsLogged()
	}
}

// TestQueueOnSharedDatabase: a queue listener on the shared database
// stores, delivers and keeps the history there; with the database gone it
// answers 452 4.3.1 (never 250) and the instance stays ready, degraded:
// the outage is every instance's, and replacing them would not help.
func TestQueueOnSharedDatabase(t *testing.T) {
	srv, dsn := sharedDatabase(t, "db-Pa55word-queue")
	h := newHarness(t, harnessOptions{
		telemetry:     true,
		listenerExtra: "max_connections_per_ip = 0\n  delivery = \"queue\"",
		extraConfig:   fmt.Sprintf("store {\n  postgres {\n    dsn = %q\n    expected_instances = 3\n  }\n}\n", dsn),
	})
	h.start()
	reply := h.mustSend(appClient, alice)
	if !strings.Contains(reply, "queued as") {
		t.Fatalf("queue listener reply %q", reply)
	}
	testutil.WaitFor(t, 30*time.Second, "the queued message at the provider", func() bool { return len(h.sb.SMTP.Messages()) == 1 })

	srv.Stop()
	_, err := h.send(appClient, alice)
	if got := testutil.Code(err); !strings.HasPrefix(got, "452 4.3.1") {
		t.Fatalf("queue listener with the database gone: %v, want 452 4.3.1", err)
	}
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health/ready = %d with the shared database gone, want 200 (degraded)", resp.StatusCode)
	}
}

// TestSharedReloadedPoolGetsTheOldPoolsIdleSlot: a reload that changes a
// mailbox's pool (here its connect_timeout) leaves the old pool to the
// sessions of the old configuration. With one connection slot per
// mailbox across the instances, a message of a new session must not wait
// for the old pool's idle connection to time out: the instance asks its
// old pool to close it.
func TestSharedReloadedPoolGetsTheOldPoolsIdleSlot(t *testing.T) {
	_, dsn := sharedDatabase(t, "db-Pa55word-reload")
	h := newHarness(t, harnessOptions{
		providerExtra: "max_connections = 1\n  connection_wait_timeout = \"20s\"",
		extraConfig:   fmt.Sprintf("store {\n  postgres {\n    dsn = %q\n  }\n}\n", dsn),
	})
	h.start()
	old := dialAuth(t, h, appClient) // a session of the old configuration, kept open
	if _, err := sendOn(old, alice, "before the reload"); err != nil {
		t.Fatal(err)
	}
	h.rewrite(strings.Replace(h.cfgText, `connect_timeout = "5s"`, `connect_timeout = "6s"`, 1))
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.mustSend(appClient, alice)
	waited := time.Since(start)
	if waited > 5*time.Second {
		t.Fatalf("the new pool waited %s for the old pool's idle connection", waited)
	}
	t.Logf("a new session's message after the reload took %s", waited.Round(time.Millisecond))
	if _, err := sendOn(old, alice, "after the reload"); err != nil {
		t.Fatalf("the old session after the reload: %v", err)
	}
}

// sendOn sends one message on an open session.
func sendOn(c *smtp.Client, from, text string) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt("rcpt@example.net", nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte("Subject: " + text + "\r\n\r\n" + text + "\r\n")); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}
