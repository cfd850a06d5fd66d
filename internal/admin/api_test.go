package admin

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Every API request needs a bearer token; the read token reads, only the
// admin token acts, and a cookie is no substitute.
func TestAPIAuthentication(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name, method, path, token string
		status                    int
		wwwAuth                   string // a part of WWW-Authenticate ("" when none is expected)
	}{
		{"no token", "GET", "/api/v1/accounts", "", 401, `Bearer realm="oauthrelay"`},
		{"wrong token", "GET", "/api/v1/accounts", wrongToken, 401, `error="invalid_token"`},
		{"read token", "GET", "/api/v1/accounts", readToken, 200, ""},
		{"admin token reads", "GET", "/api/v1/accounts", adminToken, 200, ""},
		{"unknown endpoint, no token", "GET", "/api/v1/nothing", "", 401, "Bearer"},
		{"unknown endpoint", "GET", "/api/v1/nothing", readToken, 404, ""},
		{"wrong method", "PUT", "/api/v1/accounts", readToken, 404, ""},
		{"read token retries", "POST", "/api/v1/queue/" + idQueued + "/retry", readToken, 403, `error="insufficient_scope"`},
		{"read token deletes", "DELETE", "/api/v1/queue/" + idQueued, readToken, 403, `error="insufficient_scope"`},
		{"read token reloads", "POST", "/api/v1/reload", readToken, 403, `error="insufficient_scope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, v := h.api(tc.method, tc.path, tc.token)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, v)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, tc.wwwAuth) || (tc.wwwAuth == "") != (got == "") {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.wwwAuth)
			}
			if tc.status >= 400 && v["error"] == nil {
				t.Errorf("error answer without an error: %v", v)
			}
		})
	}
	if calls := h.b.st.callLog(); len(calls) != 0 || h.b.reloadCount() != 0 {
		t.Errorf("the read token acted: store calls %v, reloads %d", calls, h.b.reloadCount())
	}
	h.wantAudit("action=queue.retry", "target="+idQueued, "outcome=forbidden", "scope=read", "via=api", "token=sha256:")
	h.wantAudit("action=queue.delete", "outcome=forbidden")
	h.wantAudit("action=reload", "outcome=forbidden")
	h.wantAudit("action=authenticate", "outcome=failure", "scope=none", "token="+failedTokenID(hashToken(wrongToken)))

	t.Run("a session cookie is not a token", func(t *testing.T) {
		b := h.browser()
		b.login(adminToken)
		resp, _ := b.get("/api/v1/accounts")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API with the console's cookie: %d, want 401", resp.StatusCode)
		}
	})
	t.Run("other schemes", func(t *testing.T) {
		for _, auth := range []string{"Basic " + adminToken, adminToken, "Bearer", "Bearer "} {
			req := h.newRequest("GET", "/api/v1/accounts", nil)
			req.Header.Set("Authorization", auth)
			if resp, _ := h.request(nil, req); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("Authorization %.8q…: %d, want 401", auth, resp.StatusCode)
			}
		}
	})
}

func TestAPIReadEndpoints(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		path  string
		check func(t *testing.T, v map[string]any)
	}{
		{"/api/v1/overview", func(t *testing.T, v map[string]any) {
			relay := v["relay"].(map[string]any)
			queue := v["queue"].(map[string]any)
			accounts := v["accounts"].(map[string]any)
			if relay["version"] != "1.4.0-test" || relay["store"] != "sqlite" || relay["history_subjects"] != false ||
				relay["uptime_seconds"] != float64(50*3600) || relay["started"] != "2026-03-12T07:26:53Z" {
				t.Errorf("relay = %v", relay)
			}
			if queue["queued"] != 1.0 || queue["held"] != 1.0 || queue["oldest_queued_seconds"] != 7200.0 {
				t.Errorf("queue = %v", queue)
			}
			if accounts["total"] != 2.0 || accounts["degraded"] != 1.0 {
				t.Errorf("accounts = %v", accounts)
			}
			if len(v["listeners"].([]any)) != 2 || v["reload"].(map[string]any)["last_result"] != "failure" ||
				v["vault"].(map[string]any)["authenticated"] != true {
				t.Errorf("overview = %v", v)
			}
		}},
		{"/api/v1/accounts", func(t *testing.T, v map[string]any) {
			list := v["accounts"].([]any)
			alice, bob := list[0].(map[string]any), list[1].(map[string]any)
			if alice["address"] != "alice@example.com" || alice["token_state"] != "valid" || alice["degraded"] != false ||
				alice["token_expiry"] != "2026-03-14T10:06:53Z" || alice["quota_used"].(map[string]any)["recipients_per_day"] != 0.93 ||
				alice["pool"].(map[string]any)["max"] != 4.0 || alice["queued"] != 1.0 {
				t.Errorf("alice = %v", alice)
			}
			if bob["token_state"] != "failing" || bob["circuit"] != "open" || bob["degraded"] != true || bob["held"] != 1.0 ||
				!strings.HasPrefix(bob["last_error"].(string), "invalid_grant") || bob["token_expiry"] != nil {
				t.Errorf("bob = %v", bob)
			}
		}},
		{"/api/v1/reload", func(t *testing.T, v map[string]any) {
			if v["config_path"] != "/etc/oauthrelay/relay.hcl" || v["last_result"] != "failure" || v["reloads"] != 2.0 ||
				len(v["diagnostics"].([]any)) != 1 || !strings.Contains(v["last_error"].(string), "adress") {
				t.Errorf("reload = %v", v)
			}
		}},
		{"/api/v1/vault", func(t *testing.T, v map[string]any) {
			secrets := v["secrets"].([]any)
			if v["configured"] != true || v["auth_method"] != "approle" || len(secrets) != 2 ||
				secrets[0].(map[string]any)["ref"] != "vault://secret/oauthrelay/m365#client_secret" {
				t.Errorf("vault = %v", v)
			}
		}},
		{"/api/v1/queue", func(t *testing.T, v map[string]any) {
			list := v["messages"].([]any)
			if len(list) != 2 || v["next_after"] != nil {
				t.Fatalf("queue = %v", v)
			}
			first := list[1].(map[string]any) // IDs sort: 01JHELD… < 01JQUEUED…
			if first["id"] != idQueued || first["state"] != "queued" || first["attempts"] != 3.0 || first["message_id"] != "<q1@scanner.example>" ||
				first["expires"] != "2026-03-19T07:26:53Z" || len(first["recipients"].([]any)) != 2 {
				t.Errorf("queued entry = %v (expires: received + the configured 120h)", first)
			}
		}},
		{"/api/v1/queue?state=held", func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 1 || list[0].(map[string]any)["id"] != idHeld {
				t.Errorf("held = %v", v)
			}
		}},
		{"/api/v1/queue?account=BOB@example.com&limit=1", func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 1 || v["next_after"] != idHeld {
				t.Errorf("bob's = %v", v)
			}
		}},
		{"/api/v1/queue?after=" + idHeld, func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 1 || list[0].(map[string]any)["id"] != idQueued {
				t.Errorf("after = %v", v)
			}
		}},
		{"/api/v1/messages?from=SCANNER", func(t *testing.T, v map[string]any) {
			list := v["messages"].([]any)
			if len(list) != 1 || list[0].(map[string]any)["id"] != idQueued || list[0].(map[string]any)["subject"] != nil {
				t.Errorf("search = %v", v)
			}
		}},
		{"/api/v1/messages", func(t *testing.T, v map[string]any) {
			var ids []string
			for _, m := range v["messages"].([]any) {
				ids = append(ids, m.(map[string]any)["id"].(string))
			}
			if !slices.Equal(ids, []string{idHeld, idQueued, idDelivered, idDeleted}) {
				t.Errorf("all history, newest first: %v", ids)
			}
		}},
		{"/api/v1/messages?limit=2", func(t *testing.T, v map[string]any) {
			if len(v["messages"].([]any)) != 2 || v["next_before"] != idQueued {
				t.Errorf("first page = %v", v)
			}
		}},
		{"/api/v1/messages?limit=2&before=" + idQueued, func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 2 || list[0].(map[string]any)["id"] != idDelivered {
				t.Errorf("second page = %v", v)
			}
		}},
		{"/api/v1/messages?message_id=crm-7@crm.example&state=sent", func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 1 || list[0].(map[string]any)["mode"] != "direct" {
				t.Errorf("by Message-ID = %v", v)
			}
		}},
		{"/api/v1/messages?rcpt=gone@&since=7d&until=24h", func(t *testing.T, v map[string]any) {
			if list := v["messages"].([]any); len(list) != 1 || list[0].(map[string]any)["id"] != idDeleted {
				t.Errorf("by recipient and time = %v", v)
			}
		}},
		{"/api/v1/messages/" + strings.ToLower(idQueued) + "!", func(t *testing.T, v map[string]any) {
			q, hist, events := v["queue"].(map[string]any), v["history"].(map[string]any), v["events"].([]any)
			if v["id"] != idQueued || q["state"] != "queued" || hist["mode"] != "queue" || len(events) != 2 ||
				events[1].(map[string]any)["recipient"] != "x@example.net" || hist["subject"] != nil {
				t.Errorf("trail = %v", v)
			}
		}},
		{"/api/v1/messages/" + idDelivered, func(t *testing.T, v map[string]any) {
			if v["queue"] != nil || v["history"].(map[string]any)["state"] != "sent" || len(v["events"].([]any)) != 2 {
				t.Errorf("direct message = %v", v)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, v := h.api("GET", tc.path, readToken)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %v", resp.StatusCode, v)
			}
			tc.check(t, v)
		})
	}
}

// Subjects are shown only when the store keeps them.
func TestAPISubjects(t *testing.T) {
	for _, subjects := range []bool{false, true} {
		t.Run(fmt.Sprint("history_subjects=", subjects), func(t *testing.T) {
			h := newHarness(t, harnessOptions{subjects: subjects})
			resp, v := h.api("GET", "/api/v1/messages?subject=invoice", readToken)
			if !subjects {
				if resp.StatusCode != http.StatusBadRequest || v["parameter"] != "subject" {
					t.Errorf("subject search without subjects: %d %v", resp.StatusCode, v)
				}
				// Even a store that returned one would not show it.
				h.b.st.records[idQueued].Subject = "leaked subject"
				_, v = h.api("GET", "/api/v1/messages/"+idQueued, readToken)
				if _, ok := v["history"].(map[string]any)["subject"]; ok {
					t.Errorf("a subject is shown: %v", v)
				}
				return
			}
			list := v["messages"].([]any)
			if resp.StatusCode != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["subject"] != "Scan of invoice 42" {
				t.Errorf("subject search: %d %v", resp.StatusCode, v)
			}
		})
	}
}

func TestAPISearchParameters(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	now := h.clock.Now()
	tests := []struct {
		query string
		param string // the parameter a 400 names; "" for 200
		want  func(q store.HistoryQuery) bool
	}{
		{"since=24h", "", func(q store.HistoryQuery) bool { return q.Since.Equal(now.Add(-24*time.Hour)) && q.Until.IsZero() }},
		{"since=7d&until=1d12h", "", func(q store.HistoryQuery) bool {
			return q.Since.Equal(now.Add(-7*24*time.Hour)) && q.Until.Equal(now.Add(-36*time.Hour))
		}},
		{"since=2026-03-01T10:00:00%2B01:00", "", func(q store.HistoryQuery) bool {
			return q.Since.Equal(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
		}},
		{"since=2026-03-01&until=2026-03-02T08:30", "", func(q store.HistoryQuery) bool {
			return q.Since.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) && q.Until.Equal(time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC))
		}},
		{"id=01jqueued0000000000000000a!&before=01jheld000000000000000000b", "", func(q store.HistoryQuery) bool {
			return q.ID == idQueued && q.Before == idHeld
		}},
		{"from=a&rcpt=b&message_id=%3Cc%3E&account=d&state=bounced&limit=1000", "", func(q store.HistoryQuery) bool {
			return q.From == "a" && q.Rcpt == "b" && q.HeaderID == "<c>" && q.Account == "d" && q.State == "bounced" && q.Limit == 1000
		}},
		{"", "", func(q store.HistoryQuery) bool { return q.Limit == defaultLimit }},
		{"since=yesterday", "since", nil},
		{"since=-5h", "since", nil},
		{"until=0s", "until", nil},
		{"since=1h&until=2h", "until", nil},
		{"state=lost", "state", nil},
		{"limit=0", "limit", nil},
		{"limit=1001", "limit", nil},
		{"limit=ten", "limit", nil},
		{"recipient=x", "recipient", nil},
		// An ID that is nothing but mailq's markers would otherwise drop
		// the filter and the default window with it.
		{"id=*", "id", nil},
		{"id=!", "id", nil},
		{"from=a&id=%21*", "id", nil},
		{"from=a&before=*", "before", nil},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			resp, v := h.api("GET", "/api/v1/messages?"+tc.query, readToken)
			if tc.param != "" {
				if resp.StatusCode != http.StatusBadRequest || v["parameter"] != tc.param ||
					!strings.HasPrefix(v["error"].(string), tc.param+": ") {
					t.Errorf("%d %v, want 400 naming %s", resp.StatusCode, v, tc.param)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || !tc.want(h.b.st.lastQuery()) {
				t.Errorf("%d %v; query %+v", resp.StatusCode, v, h.b.st.lastQuery())
			}
		})
	}
	for _, q := range []string{"state=delivered", "limit=-1", "after=x&state=queue", "from=x", "after=!"} {
		resp, v := h.api("GET", "/api/v1/queue?"+q, readToken)
		if resp.StatusCode != http.StatusBadRequest || v["parameter"] == nil {
			t.Errorf("queue?%s: %d %v, want 400 naming a parameter", q, resp.StatusCode, v)
		}
	}
}

// The queue actions follow `oauthrelay queue`'s semantics; the answer is
// its -json output, and the status says whether the action applied.
func TestAPIQueueActions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		method, path string
		status       int
		result       string // the result's "result"
		detail       string // a part of its detail
		call         string // the store call made, "" for none
	}{
		{"POST", "/queue/" + idHeld + "/retry", 409, "failed", "held: release it first", ""},
		{"POST", "/queue/" + idQueued + "/release", 409, "unchanged", "not held", ""},
		{"POST", "/queue/" + idHeld + "/hold", 409, "unchanged", "already held", ""},
		{"POST", "/queue/" + idDeleted + "/hold", 409, "failed", "not in the queue any more: deleted (queue mode), 2026-03-12 09:26:53 UTC", ""},
		{"POST", "/queue/NOSUCHMESSAGE/retry", 404, "failed", "no such message in the queue or its history", ""},
		{"POST", "/queue/" + strings.ToLower(idQueued) + "/retry", 200, "done", "due now", "retry " + idQueued},
		{"POST", "/queue/" + idHeld + "/release", 200, "done", "released: due now", "release " + idHeld},
		{"POST", "/queue/" + idQueued + "/hold", 200, "done", "held: no attempts until released", "hold " + idQueued},
		{"DELETE", "/queue/" + idQueued, 200, "done", "deleted without a bounce", "delete " + idQueued},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			before := len(h.b.st.callLog())
			resp, v := h.api(tc.method, "/api/v1"+tc.path, adminToken)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, v)
			}
			results, _ := v["results"].([]any)
			if len(results) != 1 {
				t.Fatalf("results = %v", v)
			}
			r := results[0].(map[string]any)
			if r["result"] != tc.result || !strings.Contains(r["detail"].(string), tc.detail) {
				t.Errorf("result = %v, want %s with %q", r, tc.result, tc.detail)
			}
			if (tc.status == 200) != (v["error"] == nil) {
				t.Errorf("error field = %v with status %d", v["error"], tc.status)
			}
			calls := h.b.st.callLog()[before:]
			if (tc.call == "" && len(calls) != 0) || (tc.call != "" && !slices.Equal(calls, []string{tc.call})) {
				t.Errorf("store calls %v, want %q", calls, tc.call)
			}
			h.wantAudit("action=queue.", "outcome="+tc.result, "scope=admin", "via=api", "token="+hashToken(adminToken).id())
		})
	}
	for _, path := range []string{"/queue/" + idHeld + "/delete", "/queue/" + idHeld + "/flush"} {
		if resp, v := h.api("POST", "/api/v1"+path, adminToken); resp.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s: %d %v, want 404", path, resp.StatusCode, v)
		}
	}
	h.b.st.fail = errUnavailable
	if resp, v := h.api("POST", "/api/v1/queue/"+idHeld+"/release", adminToken); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("store down: %d %v, want 503", resp.StatusCode, v)
	}
	h.b.st.fail = errors.New("disk I/O error")
	if resp, v := h.api("GET", "/api/v1/queue", readToken); resp.StatusCode != http.StatusInternalServerError || !strings.Contains(v["error"].(string), "disk I/O") {
		t.Errorf("store failing: %d %v, want 500", resp.StatusCode, v)
	}
	if resp, v := h.api("GET", "/api/v1/messages/"+idHeld, readToken); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("store failing, message: %d %v, want 500", resp.StatusCode, v)
	}
}

func TestAPIWithoutStore(t *testing.T) {
	h := newHarness(t, harnessOptions{noStore: true})
	for _, c := range []struct{ method, path, token string }{
		{"GET", "/api/v1/messages", readToken},
		{"GET", "/api/v1/messages/" + idQueued, readToken},
		{"GET", "/api/v1/queue", readToken},
		{"POST", "/api/v1/queue/" + idQueued + "/retry", adminToken},
		{"DELETE", "/api/v1/queue/" + idQueued, adminToken},
	} {
		resp, v := h.api(c.method, c.path, c.token)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(v["error"]), "no store") {
			t.Errorf("%s %s: %d %v, want 503", c.method, c.path, resp.StatusCode, v)
		}
	}
	resp, v := h.api("GET", "/api/v1/overview", readToken)
	if resp.StatusCode != http.StatusOK || v["queue"] != nil {
		t.Errorf("overview without a store: %d %v", resp.StatusCode, v)
	}
}

func TestAPIReload(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, v := h.api("POST", "/api/v1/reload", adminToken)
	if resp.StatusCode != http.StatusOK || v["result"] != "success" || v["reload"].(map[string]any)["last_result"] != "success" {
		t.Errorf("reload: %d %v", resp.StatusCode, v)
	}
	h.wantAudit("action=reload", "target=configuration", "outcome=success", "scope=admin")
	h.b.reloadErr = errors.New(`relay.hcl:3,1-9: Unsupported block type: Blocks of type "listner" are not expected here.`)
	resp, v = h.api("POST", "/api/v1/reload", adminToken)
	if resp.StatusCode != http.StatusUnprocessableEntity || v["result"] != "failure" || !strings.Contains(v["error"].(string), "listner") {
		t.Errorf("failed reload: %d %v", resp.StatusCode, v)
	}
	h.wantAudit("action=reload", "outcome=failure", "listner")
	if h.b.reloadCount() != 2 {
		t.Errorf("%d reloads, want 2", h.b.reloadCount())
	}
}

// When the tokens cannot be read (Vault down), nothing is let in.
func TestTokensUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.login(adminToken)
	h.setTokenError(errors.New("vault: connection refused"))
	if resp, v := h.api("GET", "/api/v1/accounts", adminToken); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("API: %d %v, want 503", resp.StatusCode, v)
	}
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("page: %d, want 503", resp.StatusCode)
	}
}
