package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// addSecret registers a value no log line or answer may hold.
func (h *harness) addSecret(s string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = append(h.secrets, s)
	return s
}

// Ten wrong tokens a minute from one address lock out that address's
// wrong tokens (429) for the rest of the minute, and they keep being
// counted; the right token still gets in, through the API and the login
// form alike, so that a stranger cannot lock the operators out.
func TestAuthenticationThrottle(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	otherWrong := h.addSecret("wr-1111bbbb2222cccc3333dddd4444eeee5555ffff")
	for i := range failLimit {
		if resp, _ := h.api("GET", "/api/v1/accounts", wrongToken); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, resp.StatusCode)
		}
		if i == failLimit/2 {
			h.clock.Advance(20 * time.Second) // within the minute
		}
	}
	h.wantAudit("action=authenticate", "outcome=throttled", "scope=none",
		"wrong tokens from this address get 429 until 2026-03-14 09:27:53 UTC")
	auditBefore := len(h.auditLines())
	api := func(token string) func() (*http.Response, string) {
		return func() (*http.Response, string) {
			req := h.newRequest("GET", "/api/v1/accounts", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			return h.request(nil, req)
		}
	}
	login := func(token string) func() (*http.Response, string) {
		return func() (*http.Response, string) { return h.browser().post("/login", url.Values{"token": {token}}) }
	}
	tests := []struct {
		name   string
		send   func() (*http.Response, string)
		status int
		says   string
	}{
		{"wrong token, API", api(wrongToken), 429, "too many failed authentications"},
		{"another wrong token, API", api(otherWrong), 429, "too many failed authentications"},
		{"wrong token, login form", login(wrongToken), 429, "Too many failed sign-ins"},
		{"admin token, API", api(adminToken), 200, "alice@example.com"},
		{"read token, API", api(readToken), 200, "alice@example.com"},
		{"admin token, login form", login(adminToken), 303, ""},
		{"read token, login form", login(readToken), 303, ""},
		{"no token, API", api(""), 401, "bearer token is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.send()
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("%d, want %d saying %q\n%s", resp.StatusCode, tc.status, tc.says, body)
			}
			if retry := resp.Header.Get("Retry-After"); (tc.status == 429) != (retry == "41") {
				t.Errorf("Retry-After %q with %d", retry, resp.StatusCode)
			}
		})
	}
	if n := h.s.throttle.count("127.0.0.1"); n != failLimit+3 {
		t.Errorf("%d failures counted, want %d (the blocked ones too)", n, failLimit+3)
	}
	for _, l := range h.auditLines()[auditBefore:] {
		if strings.Contains(l, "outcome=failure") || strings.Contains(l, "outcome=throttled") {
			t.Errorf("a wrong token while locked out is logged one by one: %s", l)
		}
	}
	h.wantAudit("action=login", "outcome=success", "scope=admin")

	h.clock.Advance(41 * time.Second) // the minute is over
	if resp, _ := h.api("GET", "/api/v1/accounts", wrongToken); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token after the minute: %d, want 401", resp.StatusCode)
	}
	// Missing tokens are not guesses: a browser opening the API does
	// not lock its address out.
	for range 2 * failLimit {
		h.api("GET", "/api/v1/accounts", "")
	}
	if resp, _ := h.api("GET", "/api/v1/accounts", wrongToken); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after requests without a token: %d", resp.StatusCode)
	}
	logs := h.logs.String()
	for _, wrong := range []string{wrongToken, otherWrong} {
		if strings.Contains(logs, hashToken(wrong).id()) {
			t.Errorf("the logs name a wrong token by its SHA-256 prefix %s", hashToken(wrong).id())
		}
	}
}

// count is how many failures client has in its current window.
func (t *throttle) count(client string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.clients[client]; e != nil {
		return e.Value.(*failures).n
	}
	return 0
}

// A full table drops its oldest windows, not everyone's: a blocked
// address stays blocked however many others fail after it.
func TestThrottleTableDropsOldest(t *testing.T) {
	th := newThrottle()
	t0 := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	early := func(i int) string { return fmt.Sprintf("10.0.%d.%d", i/256, i%256) }
	for i := range maxClients - 1 {
		th.fail(early(i), t0)
	}
	const attacker = "203.0.113.7"
	for range failLimit {
		th.fail(attacker, t0.Add(time.Second))
	}
	for i := range 100 {
		th.fail(fmt.Sprintf("198.51.100.%d", i), t0.Add(2*time.Second))
	}
	if n, until := th.fail(attacker, t0.Add(3*time.Second)); n != failLimit+1 || !until.Equal(t0.Add(time.Second+failWindow)) {
		t.Errorf("the attacker's window: %d failures until %v, want %d until %v", n, until, failLimit+1, t0.Add(time.Second+failWindow))
	}
	if len(th.clients) != maxClients || th.order.Len() != maxClients {
		t.Errorf("%d clients, %d in order, want %d", len(th.clients), th.order.Len(), maxClients)
	}
	if th.count(early(0)) != 0 || th.count(early(99)) != 0 || th.count(early(100)) != 1 {
		t.Errorf("not the oldest were dropped: %d %d %d", th.count(early(0)), th.count(early(99)), th.count(early(100)))
	}
	// Windows that ended go first, whether or not the table is full.
	th.fail("192.0.2.1", t0.Add(failWindow+500*time.Millisecond))
	if len(th.clients) != 102 || th.order.Len() != 102 || th.count(attacker) != failLimit+1 {
		t.Errorf("%d clients after the early windows ended, want 102 (attacker's failures %d)", len(th.clients), th.count(attacker))
	}
}

// A flood of wrong tokens stays visible at a bounded cost to the log:
// besides the first failLimit failures of a window, one line when the
// client's count reaches each power of ten (100, 1000, …), with the count
// and the client's key, and no token.
func TestThrottleFloodLogged(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for i := range 100 {
		if i%2 == 0 {
			h.api("GET", "/api/v1/accounts", wrongToken)
		} else {
			h.browser().post("/login", url.Values{"token": {wrongToken}})
		}
	}
	flood := func() []string {
		var lines []string
		for _, l := range h.auditLines() {
			if strings.Contains(l, "outcome=throttled") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	if lines := flood(); len(lines) != 2 || !containsAll(lines[1], "count=100", "client=127.0.0.1", "100 wrong tokens") {
		t.Fatalf("after 100 wrong tokens, throttled lines:\n%s", strings.Join(lines, "\n"))
	}
	req := h.newRequest("GET", "/api/v1/accounts", nil)
	req.RemoteAddr = "127.0.0.1:4242"
	for range 9900 {
		h.s.wrongToken(req, hashToken(wrongToken), "authenticate", "api")
	}
	lines := flood()
	if len(lines) != 4 || !containsAll(lines[2], "count=1000", "client=127.0.0.1") || !containsAll(lines[3], "count=10000", "client=127.0.0.1") {
		t.Errorf("after 10000 wrong tokens, throttled lines:\n%s", strings.Join(lines, "\n"))
	}
	if n := len(h.auditLines()); n != failLimit+3 {
		t.Errorf("%d audit lines for 10000 wrong tokens, want %d", n, failLimit+3)
	}
	h.clock.Advance(failWindow)
	h.api("GET", "/api/v1/accounts", wrongToken)
	if last := h.auditLines()[len(h.auditLines())-1]; !containsAll(last, "outcome=failure", "count=1") {
		t.Errorf("the next window's first wrong token: %s", last)
	}
}
