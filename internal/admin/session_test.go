package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoginAndSessionCookie(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "TLS"}[secure]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{tls: secure})
			b := h.browser()
			resp, body := b.get("/queue?state=held")
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fqueue%3Fstate%3Dheld" {
				t.Fatalf("unauthenticated page: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			resp, body = b.get(resp.Header.Get("Location"))
			if resp.StatusCode != 200 || !strings.Contains(body, `name="next" value="/queue?state=held"`) {
				t.Fatalf("login page: %d\n%s", resp.StatusCode, body)
			}
			resp, _ = b.post("/login", url.Values{"token": {" " + readToken + "\n"}, "next": {"/queue?state=held"}})
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/queue?state=held" {
				t.Fatalf("login: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			cookies := resp.Cookies()
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			c := cookies[0]
			wantName := map[bool]string{false: "oauthrelay_session", true: "__Host-oauthrelay_session"}[secure]
			if c.Name != wantName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure != secure ||
				c.Path != "/" || c.Domain != "" || len(c.Value) < 40 || c.MaxAge != 0 {
				t.Errorf("session cookie %+v", c)
			}
			h.wantAudit("action=login", "outcome=success", "scope=read", "via=console", "token="+hashToken(readToken).id())
			if resp, body := b.get("/queue?state=held"); resp.StatusCode != 200 || !strings.Contains(body, idHeld) {
				t.Errorf("queue page after login: %d", resp.StatusCode)
			}
		})
	}
}

func TestLoginRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name    string
		form    url.Values
		headers []string
		status  int
		says    string
	}{
		{"wrong token", url.Values{"token": {wrongToken}}, nil, 401, "That token is not valid."},
		{"empty token", url.Values{"token": {"  "}}, nil, 400, "Paste a token."},
		{"from another site", url.Values{"token": {adminToken}}, []string{"Origin", "https://evil.example"}, 403, "own page"},
		{"cross-site fetch", url.Values{"token": {adminToken}}, []string{"Sec-Fetch-Site", "cross-site"}, 403, "own page"},
		{"foreign next", url.Values{"token": {adminToken}, "next": {"//evil.example/x"}}, nil, 303, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.browser().post("/login", tc.form, tc.headers...)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("%d, want %d saying %q:\n%s", resp.StatusCode, tc.status, tc.says, body)
			}
			if tc.status == 303 && resp.Header.Get("Location") != "/" {
				t.Errorf("redirect to %q, want /", resp.Header.Get("Location"))
			}
			if tc.status != 303 && len(resp.Cookies()) != 0 {
				t.Errorf("a refused login set %v", resp.Cookies())
			}
		})
	}
	h.wantAudit("action=login", "outcome=failure", "scope=none", "token="+failedTokenID(hashToken(wrongToken)))
	h.wantAudit("action=login", "outcome=refused")
}

// Sessions end after 12 idle hours, and when the token they were made
// with is rotated away; the other token's sessions live on.
func TestSessionLifetime(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	signedIn := func(b *browser) bool {
		resp, _ := b.get("/accounts")
		return resp.StatusCode == http.StatusOK
	}
	t.Run("idle expiry", func(t *testing.T) {
		b := h.browser()
		b.login(readToken)
		h.clock.Advance(11 * time.Hour)
		if !signedIn(b) {
			t.Fatal("signed out after 11 busy hours")
		}
		h.clock.Advance(11*time.Hour + 59*time.Minute)
		if !signedIn(b) {
			t.Fatal("signed out 11h59m after the last request")
		}
		h.clock.Advance(12 * time.Hour)
		if signedIn(b) {
			t.Fatal("still signed in after 12 idle hours")
		}
	})
	t.Run("token rotation", func(t *testing.T) {
		reader, admin := h.browser(), h.browser()
		reader.login(readToken)
		admin.login(adminToken)
		h.setTokens(Tokens{Read: "rd-rotated-7f3b2d4e6a8c0f1b3d5e7a9c2e4f6a8b", Admin: adminToken})
		if signedIn(reader) {
			t.Error("the old read token's session survived its rotation")
		}
		if !signedIn(admin) {
			t.Error("the admin session ended with the read token's rotation")
		}
		if resp, _ := reader.post("/login", url.Values{"token": {readToken}}); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("login with the rotated token: %d", resp.StatusCode)
		}
		reader.login("rd-rotated-7f3b2d4e6a8c0f1b3d5e7a9c2e4f6a8b")
		if !signedIn(reader) {
			t.Error("no session with the new token")
		}
	})
	t.Run("logout", func(t *testing.T) {
		b := h.browser()
		b.login(adminToken)
		csrf := b.csrf()
		resp, _ := b.post("/logout", url.Values{"csrf": {csrf}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
			t.Fatalf("logout: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if c := resp.Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
			t.Errorf("logout cookies %v: want the session cookie cleared", c)
		}
		if signedIn(b) {
			t.Error("signed in after logout")
		}
		h.wantAudit("action=logout", "outcome=success", "scope=admin")
	})
}

// Form posts need the session's CSRF token and must not come from
// another site; a read session may not act even with a valid form.
func TestFormProtection(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	admin, reader := h.browser(), h.browser()
	admin.login(adminToken)
	reader.login(readToken)
	adminCSRF, readerCSRF := admin.csrf(), reader.csrf()
	retry := "/queue/" + idQueued + "/retry"
	tests := []struct {
		name    string
		b       *browser
		form    url.Values
		headers []string
		status  int
	}{
		{"no CSRF token", admin, url.Values{}, nil, 403},
		{"wrong CSRF token", admin, url.Values{"csrf": {readerCSRF}}, nil, 403},
		{"other origin", admin, url.Values{"csrf": {adminCSRF}}, []string{"Origin", "http://evil.example"}, 403},
		{"other referer", admin, url.Values{"csrf": {adminCSRF}}, []string{"Origin", "", "Referer", "http://evil.example/x"}, 403},
		{"cross-site", admin, url.Values{"csrf": {adminCSRF}}, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"read scope", reader, url.Values{"csrf": {readerCSRF}}, nil, 403},
		{"read scope reloads", reader, url.Values{"csrf": {readerCSRF}}, nil, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := retry
			if strings.Contains(tc.name, "reload") {
				path = "/system/reload"
			}
			resp, body := tc.b.post(path, tc.form, tc.headers...)
			if resp.StatusCode != tc.status {
				t.Errorf("%d, want %d\n%s", resp.StatusCode, tc.status, body)
			}
		})
	}
	if calls := h.b.st.callLog(); len(calls) != 0 || h.b.reloadCount() != 0 {
		t.Fatalf("a refused form acted: %v, %d reloads", calls, h.b.reloadCount())
	}
	h.wantAudit("action=form", "target="+retry, "outcome=refused", "scope=admin")
	h.wantAudit("action=queue.retry", "outcome=forbidden", "scope=read", "via=console")

	t.Run("the console's own form", func(t *testing.T) {
		host := strings.TrimPrefix(h.srv.URL, "http://")
		resp, _ := admin.post(retry, url.Values{"csrf": {adminCSRF}, "return": {"/queue?state=queued"}}, "Origin", "http://"+host)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/queue?state=queued" {
			t.Fatalf("retry: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if calls := h.b.st.callLog(); !slices.Equal(calls, []string{"retry " + idQueued}) {
			t.Errorf("store calls %v", calls)
		}
		_, body := admin.get("/queue?state=queued")
		if !strings.Contains(body, "Retry "+idQueued+": due now") {
			t.Errorf("the queue page does not show the outcome:\n%s", body)
		}
		if _, body = admin.get("/queue"); strings.Contains(body, "due now") {
			t.Error("the outcome is shown twice")
		}
		h.wantAudit("action=queue.retry", "target="+idQueued, "outcome=done", "scope=admin", "via=console")
	})
	t.Run("a foreign return path", func(t *testing.T) {
		resp, _ := admin.post("/queue/"+idHeld+"/release", url.Values{"csrf": {adminCSRF}, "return": {"https://evil.example/"}})
		if resp.Header.Get("Location") != "/queue" {
			t.Errorf("redirect to %q, want /queue", resp.Header.Get("Location"))
		}
	})
	t.Run("reload", func(t *testing.T) {
		resp, _ := admin.post("/system/reload", url.Values{"csrf": {adminCSRF}})
		if resp.StatusCode != http.StatusSeeOther || h.b.reloadCount() != 1 {
			t.Fatalf("reload: %d, %d reloads", resp.StatusCode, h.b.reloadCount())
		}
		if _, body := admin.get("/system"); !strings.Contains(body, "Reloaded: the new configuration is in effect.") {
			t.Error("the system page does not show the reload's outcome")
		}
	})
}

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:4242":              "127.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:4242": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1":    "2001:db8:1:2::/64",
		"[::1]:80":                    "::/64",
	} {
		if got := clientKey(&http.Request{RemoteAddr: addr}); got != want {
			t.Errorf("clientKey(%s) = %s, want %s", addr, got, want)
		}
	}
}

func TestLocalPath(t *testing.T) {
	for p, want := range map[string]string{
		"/queue?state=held": "/queue?state=held",
		"/messages/ABC":     "/messages/ABC",
		"//evil.example/":   "/d",
		"https://evil/":     "/d",
		"/\\evil.example":   "/d",
		"queue":             "/d",
		"":                  "/d",
		"/x\r\nSet-Cookie:": "/d",
	} {
		if got := localPath(p, "/d"); got != want {
			t.Errorf("localPath(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, path := range []string{"/login", "/static/console.css", "/api/v1/accounts", "/"} {
		resp, _ := h.request(nil, h.newRequest("GET", path, nil))
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
		} {
			if got := resp.Header.Get(k); !strings.Contains(got, want) {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q allows framing", path, csp)
		}
	}
}

// The session table stays bounded and drops expired sessions.
func TestSessionTableBounds(t *testing.T) {
	ss := newSessions()
	now := time.Now()
	first := ss.create(hashToken("t"), false, now)
	for i := range maxSessions {
		ss.create(hashToken("t"), false, now.Add(time.Duration(i+1)*time.Millisecond))
	}
	if len(ss.byID) != maxSessions || ss.get(first.id, false, now) != nil {
		t.Errorf("%d sessions, first kept: %v", len(ss.byID), ss.get(first.id, false, now) != nil)
	}
	ss.create(hashToken("t"), false, now.Add(sessionMax))
	if len(ss.byID) != 1 {
		t.Errorf("%d sessions after a week, want 1", len(ss.byID))
	}
}

// No token value reaches a log line or an answer, whatever happens: the
// audit log names tokens by their identifier only. (Every harness also
// checks this when its test ends.)
func TestTokensNeverInOutput(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.post("/login", url.Values{"token": {wrongToken}})
	b.login(adminToken)
	b.post("/queue/"+idQueued+"/retry", url.Values{"csrf": {b.csrf()}})
	b.post("/queue/"+idQueued+"/hold", url.Values{"csrf": {"forged"}})
	for _, tok := range []string{readToken, adminToken, wrongToken, ""} {
		h.api("GET", "/api/v1/overview", tok)
		h.api("POST", "/api/v1/queue/"+idHeld+"/release", tok)
		h.api("POST", "/api/v1/reload", tok)
	}
	logs := h.logs.String()
	for _, tok := range []string{readToken, adminToken, wrongToken} {
		if strings.Contains(logs, tok) {
			t.Errorf("the logs hold a token")
		}
		id := hashToken(tok).id()
		if tok == wrongToken {
			id = failedTokenID(hashToken(tok)) // not a token: see TestFailedTokenAuditID
		}
		if !strings.Contains(logs, "token="+id) {
			t.Errorf("the audit log never names token %s", id)
		}
	}
	if n := len(h.auditLines()); n < 10 {
		t.Errorf("%d audit lines, want one per action, login and refusal:\n%s", n, logs)
	}
}

// One Server serves plain HTTP and TLS at once (a reload may switch the
// listener): each request's own connection decides whether the cookie
// is Secure and carries the __Host- prefix.
func TestSessionCookiePerRequest(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tlsSrv := httptest.NewTLSServer(h.s.Handler())
	t.Cleanup(tlsSrv.Close)
	tests := []struct {
		name   string
		b      *browser
		cookie string
		secure bool
	}{
		{"plain", h.browser(), "oauthrelay_session", false},
		{"TLS", h.browserAt(tlsSrv.URL, tlsSrv.Client().Transport), "__Host-oauthrelay_session", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := tc.b.post("/login", url.Values{"token": {adminToken}})
			c := resp.Cookies()
			if resp.StatusCode != http.StatusSeeOther || len(c) != 1 || c[0].Name != tc.cookie || c[0].Secure != tc.secure {
				t.Fatalf("login: %d %v", resp.StatusCode, c)
			}
			if resp, _ := tc.b.get("/accounts"); resp.StatusCode != http.StatusOK {
				t.Errorf("a page with the session: %d", resp.StatusCode)
			}
			resp, _ = tc.b.post("/logout", url.Values{"csrf": {tc.b.csrf()}})
			if c := resp.Cookies(); len(c) != 1 || c[0].Name != tc.cookie || c[0].MaxAge >= 0 || c[0].Secure != tc.secure {
				t.Errorf("logout cookie %v", c)
			}
		})
	}
}

// A session is bound to the mode it was made in: a plain-HTTP session's
// ID presented over TLS under the __Host- name (once TLS is on, say),
// or a TLS session's over plain HTTP, is refused as signed out, and the
// session ends: its ID has crossed the network in clear, or been moved
// by hand.
func TestSessionBoundToItsMode(t *testing.T) {
	tests := []struct {
		name      string
		madeOver  bool // TLS
		shownOver bool
	}{
		{"plain session over TLS", false, true},
		{"TLS session over plain HTTP", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			tlsSrv := httptest.NewTLSServer(h.s.Handler())
			t.Cleanup(tlsSrv.Close)
			servers := map[bool]*browser{false: h.browser(), true: h.browserAt(tlsSrv.URL, tlsSrv.Client().Transport)}
			maker := servers[tc.madeOver]
			resp, _ := maker.post("/login", url.Values{"token": {adminToken}})
			if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
				t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
			}
			id := resp.Cookies()[0].Value
			other := servers[tc.shownOver]
			req := other.newRequest(http.MethodGet, "/queue", nil)
			req.AddCookie(&http.Cookie{Name: map[bool]string{false: "oauthrelay_session", true: "__Host-oauthrelay_session"}[tc.shownOver], Value: id})
			if resp, body := h.request(other.client, req); resp.StatusCode != http.StatusSeeOther ||
				!strings.HasPrefix(resp.Header.Get("Location"), "/login") {
				t.Errorf("the session in the other mode: %d → %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if resp, _ := maker.get("/accounts"); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("the session lives on after its ID was shown in the other mode: %d", resp.StatusCode)
			}
		})
	}
}
