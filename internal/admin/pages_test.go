package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Every page renders for both scopes, with and without a store and with
// subjects on and off; the read scope sees no action, and no page shows
// a subject unless the store keeps them.
func TestPagesRender(t *testing.T) {
	pages := []struct {
		path  string
		wants []string
	}{
		{"/", []string{"relay.example", "1.4.0-test", "1 degraded", "printers", "Last reload: <span class=\"state-failure\">failure</span>", "approle"}},
		{"/accounts", []string{"alice@example.com", "invalid_grant", `<meter min="0" max="1" low="0.7" high="0.9" optimum="0" value="0.93">93%</meter>`, "1 open, 0 idle, max 4"}},
		{"/queue", []string{idQueued, idHeld, "451 4.3.0 Mailbox busy", "2 of 2"}},
		{"/queue?state=held", []string{idHeld}},
		{"/history", []string{idQueued, idDelivered, idDeleted, "customer@example.org"}},
		{"/history?from=crm&since=7d", []string{idDelivered, "1 message"}},
		{"/history?from=crm", []string{"0 messages", "Searched only the 24h back from now"}},
		{"/messages/" + idQueued, []string{"&lt;q1@scanner.example&gt;", "x@example.net", "451 4.3.0 Mailbox busy", "Trail", "accepted", "on listener “printers”"}},
		{"/messages/" + idDelivered, []string{"sent", "(direct mode)", "not in the queue", "250 2.0.0 OK"}},
		{"/system", []string{"/etc/oauthrelay/relay.hcl", "adress", "vault://secret/oauthrelay/m365#client_secret"}},
	}
	actions := []string{`action="/queue/` + idQueued + `/retry"`, `action="/system/reload"`}
	for _, o := range []harnessOptions{{}, {subjects: true}} {
		h := newHarness(t, o)
		for _, token := range []string{readToken, adminToken} {
			b := h.browser()
			b.login(token)
			scope := map[string]string{readToken: "read", adminToken: "admin"}[token]
			for _, p := range pages {
				t.Run(fmt.Sprintf("%s subjects=%v %s", scope, o.subjects, p.path), func(t *testing.T) {
					resp, body := b.get(p.path)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d\n%s", resp.StatusCode, body)
					}
					for _, w := range p.wants {
						if !strings.Contains(body, w) {
							t.Errorf("lacks %q", w)
						}
					}
					for _, must := range []string{`<a class="skip" href="#main">`, `<nav aria-label="Console">`, `<main id="main"`, "scope-" + scope} {
						if !strings.Contains(body, must) {
							t.Errorf("lacks %q", must)
						}
					}
					if !o.subjects && (strings.Contains(body, "Subject") || strings.Contains(body, "invoice 42")) {
						t.Error("shows a subject, or a subject field, with history_subjects off")
					}
					for _, a := range actions {
						if scope == "read" && strings.Contains(body, a) {
							t.Errorf("the read scope sees %s", a)
						}
					}
				})
			}
			if _, body := b.get("/queue"); scope == "admin" && !strings.Contains(body, actions[0]) {
				t.Error("the admin scope sees no retry button")
			}
		}
		if o.subjects {
			b := h.browser()
			b.login(readToken)
			for _, p := range []string{"/history", "/messages/" + idQueued} {
				if _, body := b.get(p); !strings.Contains(body, "Scan of invoice 42") {
					t.Errorf("%s with subjects on lacks the subject", p)
				}
			}
		}
	}
}

func TestPagesWithoutStoreAndErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{noStore: true})
	b := h.browser()
	b.login(adminToken)
	for _, p := range []string{"/", "/queue", "/history", "/messages/" + idQueued} {
		resp, body := b.get(p)
		if resp.StatusCode != http.StatusOK || !(strings.Contains(body, "no store block") || strings.Contains(body, "No store")) {
			t.Errorf("%s without a store: %d", p, resp.StatusCode)
		}
	}
	h2 := newHarness(t, harnessOptions{})
	b2 := h2.browser()
	b2.login(readToken)
	for path, want := range map[string]int{
		"/messages/NOSUCHMESSAGE": http.StatusNotFound,
		"/nowhere":                http.StatusNotFound,
		"/history?since=soon":     http.StatusBadRequest,
		"/history?from=crm&id=*":  http.StatusBadRequest,
		"/queue?state=bounced":    http.StatusBadRequest,
	} {
		if resp, body := b2.get(path); resp.StatusCode != want || !strings.Contains(body, `class="flash bad"`) {
			t.Errorf("%s: %d, want %d with the reason", path, resp.StatusCode, want)
		}
	}
	if _, body := b2.get("/history?since=soon"); !strings.Contains(body, "Check the since field") || !strings.Contains(body, `value="soon"`) {
		t.Error("a bad search does not say which field, or loses the form")
	}
}

func TestStaticFiles(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for path, ct := range map[string]string{
		"/static/console.css": "text/css", "/static/console.js": "text/javascript", "/static/favicon.svg": "image/svg+xml",
	} {
		resp, body := h.request(nil, h.newRequest("GET", path, nil))
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) || body == "" {
			t.Errorf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

// The list pages link to their next and first pages, keeping the filters.
func TestPagesPaging(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(readToken)
	_, body := b.get("/queue?limit=1")
	next := `href="/queue?after=` + idHeld + `&amp;limit=1"`
	if !strings.Contains(body, next) || strings.Contains(body, "First page") {
		t.Errorf("first queue page lacks %s", next)
	}
	_, body = b.get("/queue?limit=1&after=" + idHeld)
	if !strings.Contains(body, idQueued) || strings.Contains(body, idHeld+"</a>") || !strings.Contains(body, `href="/queue?limit=1">First page`) {
		t.Errorf("second queue page:\n%s", body)
	}
	_, body = b.get("/history?from=example&since=all&limit=2")
	older := `href="/history?before=` + idQueued + `&amp;from=example&amp;limit=2&amp;since=all"`
	if !strings.Contains(body, older) {
		t.Errorf("first history page lacks %s", older)
	}
	_, body = b.get("/history?from=example&since=all&limit=2&before=" + idQueued)
	if !strings.Contains(body, idDelivered) || !strings.Contains(body, idDeleted) || strings.Contains(body, idHeld) ||
		!strings.Contains(body, `href="/history?from=example&amp;limit=2&amp;since=all">Newest`) {
		t.Errorf("second history page:\n%s", body)
	}
}

// The sign-in page and everything a stranger can reach leave the
// runtime alone: no Backend call (its locks are the reload's), so an
// unauthenticated client cannot contend with a reload.
func TestUnauthenticatedRequestsLeaveTheRuntimeAlone(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name   string
		send   func() (*http.Response, string)
		status int
		says   string
	}{
		{"login page", func() (*http.Response, string) { return h.browser().get("/login?next=/queue") }, 200, `value="/queue"`},
		{"wrong token", func() (*http.Response, string) {
			return h.browser().post("/login", url.Values{"token": {wrongToken}})
		}, 401, "That token is not valid."},
		{"empty token", func() (*http.Response, string) { return h.browser().post("/login", url.Values{"token": {""}}) }, 400, "Paste a token."},
		{"foreign form", func() (*http.Response, string) {
			return h.browser().post("/login", url.Values{"token": {wrongToken}}, "Origin", "https://evil.example")
		}, 403, "own page"},
		{"a page", func() (*http.Response, string) { return h.browser().get("/queue") }, 303, ""},
		{"a form post", func() (*http.Response, string) { return h.browser().post("/system/reload", url.Values{}) }, 303, ""},
		{"the API", func() (*http.Response, string) { return h.browser().get("/api/v1/overview") }, 401, "bearer token"},
		{"a static file", func() (*http.Response, string) { return h.browser().get("/static/console.css") }, 200, ""},
		{"correct token", func() (*http.Response, string) {
			return h.browser().post("/login", url.Values{"token": {readToken}})
		}, 303, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.b.callCount()
			resp, body := tc.send()
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("%d, want %d saying %q\n%s", resp.StatusCode, tc.status, tc.says, body)
			}
			if n := h.b.callCount() - before; n != 0 {
				t.Errorf("%d Backend calls", n)
			}
		})
	}
	if _, body := h.browser().get("/login"); !strings.Contains(body, "<title>Sign in · oauthrelay</title>") || strings.Contains(body, "relay.example") {
		t.Error("the sign-in page names the host to strangers, or lacks its title")
	}
}

// The auto-refresh switch (which console.js keys on) is on the pages
// that are cheap to reload and show live state; not on History, whose
// searches are expensive, nor on any error page (a 503 for a search
// stopped at its deadline would otherwise repeat it every 30 s).
func TestAutoRefreshOnlyWhereCheap(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(adminToken)
	const marker = `id="autorefresh"`
	tests := []struct {
		path    string
		status  int
		refresh bool
	}{
		{"/", 200, true},
		{"/accounts", 200, true},
		{"/queue", 200, true},
		{"/system", 200, true},
		{"/messages/" + idQueued, 200, true},
		{"/history", 200, false},
		{"/history?from=crm", 200, false},
		{"/history?since=soon", 400, false},
		{"/queue?state=bounced", 400, false},
		{"/messages/NOSUCHMESSAGE", 404, false},
		{"/nowhere", 404, false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := b.get(tc.path)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if strings.Contains(body, marker) != tc.refresh {
				t.Errorf("auto-refresh switch present: %v, want %v", !tc.refresh, tc.refresh)
			}
		})
	}
	h.b.st.mu.Lock()
	h.b.st.fail = errUnavailable
	h.b.st.mu.Unlock()
	for _, path := range []string{"/queue", "/messages/" + idQueued} {
		if resp, body := b.get(path); resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, marker) {
			t.Errorf("%s with the store down: %d, auto-refresh switch present: %v", path, resp.StatusCode, strings.Contains(body, marker))
		}
	}
}
