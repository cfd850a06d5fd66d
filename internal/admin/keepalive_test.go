package admin

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// exchange sends req on a fresh connection to the harness's server,
// reads the answer, and reports whether the server kept the connection
// open: a second request on it (GET /login) is answered, where a server
// that hung up after the first answer gives EOF (or a reset).
func (h *harness) exchange(req *http.Request) (resp *http.Response, open bool) {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		h.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, body, err := roundTrip(conn, br, req)
	if err != nil {
		h.t.Fatal(err)
	}
	h.record(resp, body)
	_, _, err = roundTrip(conn, br, h.newRequest(http.MethodGet, "/login", nil))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		h.t.Fatalf("the second request on the connection: %v", err)
	}
	return resp, err == nil
}

// roundTrip writes req on conn and reads its answer and body from br.
func roundTrip(conn net.Conn, br *bufio.Reader, req *http.Request) (*http.Response, string, error) {
	if err := req.Write(conn); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// A stranger's request (no token, a wrong one, a foreign host name, the
// sign-in page, a page without a session) is answered with
// "Connection: close" and the server hangs up, so that one cheap request
// cannot hold one of the console's few connections for the idle
// timeout; an operator's requests keep theirs.
func TestStrangersConnectionsClose(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(readToken)
	get := func(path string, headers ...string) func() *http.Request {
		return func() *http.Request {
			req := h.newRequest(http.MethodGet, path, nil)
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Set(headers[i], headers[i+1])
			}
			return req
		}
	}
	bearer := func(path, token string) func() *http.Request { return get(path, "Authorization", "Bearer "+token) }
	signedIn := func(path string) func() *http.Request {
		return func() *http.Request { return b.withSession(b.newRequest(http.MethodGet, path, nil)) }
	}
	login := func(token string, headers ...string) func() *http.Request {
		return func() *http.Request {
			return h.browser().formRequest("/login", url.Values{"token": {token}}, headers...)
		}
	}
	foreignHost := func() *http.Request {
		req := h.newRequest(http.MethodGet, "/login", nil)
		req.Host = "rebind.attacker.example"
		return req
	}
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		open   bool
	}{
		{"API without a token", get("/api/v1/accounts"), 401, false},
		{"API with a wrong token", bearer("/api/v1/accounts", wrongToken), 401, false},
		{"unknown API path without a token", get("/api/v1/nowhere"), 401, false},
		{"foreign host name", foreignHost, 421, false},
		{"sign-in page", get("/login"), 200, false},
		{"wrong token signing in", login(wrongToken), 401, false},
		{"empty token signing in", login(""), 400, false},
		{"sign-in from another site", login(adminToken, "Origin", "https://evil.example"), 403, false},
		{"a page without a session", get("/queue"), 303, false},
		{"no page without a session", get("/nowhere"), 303, false},
		{"a static file without a session", get("/static/console.css"), 200, false},
		{"a stale session", get("/queue", "Cookie", "oauthrelay_session=forged"), 303, false},

		{"API with the read token", bearer("/api/v1/accounts", readToken), 200, true},
		{"API error for an operator", bearer("/api/v1/nowhere", readToken), 404, true},
		{"a page with a session", signedIn("/queue"), 200, true},
		{"an error page with a session", signedIn("/nowhere"), 404, true},
		{"a static file with a session", signedIn("/static/console.css"), 200, true},
		{"the right token signing in", login(adminToken), 303, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, open := h.exchange(tc.req())
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if open != tc.open || resp.Close == tc.open {
				t.Errorf("connection kept open: %v (Connection: %q), want %v", open, resp.Header.Get("Connection"), tc.open)
			}
		})
	}
	t.Run("locked out", func(t *testing.T) {
		for range failLimit {
			h.api("GET", "/api/v1/accounts", wrongToken)
		}
		for _, req := range []func() *http.Request{bearer("/api/v1/accounts", wrongToken), login(wrongToken)} {
			if resp, open := h.exchange(req()); resp.StatusCode != http.StatusTooManyRequests || open || !resp.Close {
				t.Errorf("%d, connection kept open: %v", resp.StatusCode, open)
			}
		}
	})
	t.Run("a refused form", func(t *testing.T) {
		req := b.withSession(b.formRequest("/system/reload", url.Values{"csrf": {"forged"}}))
		if resp, open := h.exchange(req); resp.StatusCode != http.StatusForbidden || open || !resp.Close {
			t.Errorf("%d, connection kept open: %v", resp.StatusCode, open)
		}
	})
}
