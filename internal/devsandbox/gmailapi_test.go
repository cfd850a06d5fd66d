package devsandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const gmailUser = "someone@gmail.test"

type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Errors  []struct {
			Reason string `json:"reason"`
			Domain string `json:"domain"`
		} `json:"errors"`
	} `json:"error"`
}

// googleErr decodes a Google APIs error body and checks it is consistent
// (domain "global" unless another is given).
func (r apiResponse) googleErr(t *testing.T, domain ...string) googleError {
	t.Helper()
	var e googleError
	if err := json.Unmarshal(r.body, &e); err != nil || len(e.Error.Errors) != 1 {
		t.Fatalf("status %d: body is not a Google error: %.300q", r.status, r.body)
	}
	wantDomain := "global"
	if len(domain) > 0 {
		wantDomain = domain[0]
	}
	if e.Error.Code != r.status || e.Error.Message == "" || e.Error.Status == "" || e.Error.Errors[0].Domain != wantDomain {
		t.Errorf("inconsistent Google error: %s", r.body)
	}
	return e
}

func gmailSendURL(sb *devsandbox.Sandbox, user string) string {
	return sb.Gmail.URL + "/upload/gmail/v1/users/" + user + "/messages/send?uploadType=media"
}

func TestGmailAPISend(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, gmailUser, devsandbox.GmailSendScope)
	raw := "From: someone@gmail.test\r\nTo: a@example.com\r\nCc: b@example.com\r\nBcc: c@example.com\r\nSubject: via API\r\n\r\nhello\r\n"
	for _, user := range []string{gmailUser, "me"} {
		r := doRequest(t, sb, "POST", gmailSendURL(sb, user), token, "message/rfc822", []byte(raw))
		if r.status != http.StatusOK {
			t.Fatalf("users/%s: %d %s", user, r.status, r.body)
		}
		var ok struct {
			ID       string   `json:"id"`
			LabelIDs []string `json:"labelIds"`
		}
		if err := json.Unmarshal(r.body, &ok); err != nil || ok.ID == "" || !cmp.Equal(ok.LabelIDs, []string{"SENT"}) {
			t.Errorf("answer %s", r.body)
		}
	}
	msgs := sb.Gmail.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		if diff := cmp.Diff([]string{"a@example.com", "b@example.com", "c@example.com"}, m.To); diff != "" {
			t.Errorf("recipients (-want +got):\n%s", diff)
		}
		parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		if m.User != gmailUser || m.Subject != "via API" || parsed.Header.Get("Bcc") != "" || bytes.Contains(m.Data, []byte("c@example.com")) {
			t.Errorf("recorded %+v:\n%s", m, m.Data)
		}
	}
	if n := len(sb.Graph.Messages()) + len(sb.SMTP.Messages()); n != 0 {
		t.Errorf("%d messages recorded by the other endpoints", n)
	}
}

func TestGmailAPIRejects(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, gmailUser, devsandbox.GmailScope)
	graphToken := tokenFor(t, sb, gmailUser, devsandbox.GraphScope)
	sb.Tokens.SetAccessTokenTTL(0)
	expired := tokenFor(t, sb, gmailUser, devsandbox.GmailScope)
	msg := []byte(plainMessage)
	tests := []struct {
		name, url, token, contentType string
		body                          []byte
		status                        int
		reason, googleStatus          string
	}{
		{"no token", gmailSendURL(sb, gmailUser), "", "message/rfc822", msg, 401, "authError", "UNAUTHENTICATED"},
		{"expired token", gmailSendURL(sb, gmailUser), expired, "message/rfc822", msg, 401, "authError", "UNAUTHENTICATED"},
		{"wrong scope", gmailSendURL(sb, gmailUser), graphToken, "message/rfc822", msg, 403, "insufficientPermissions", "PERMISSION_DENIED"},
		{"another user", gmailSendURL(sb, "other@gmail.test"), token, "message/rfc822", msg, 403, "forbidden", "PERMISSION_DENIED"},
		{"not media upload", strings.Replace(gmailSendURL(sb, gmailUser), "media", "resumable", 1), token, "message/rfc822", msg, 400, "badRequest", "INVALID_ARGUMENT"},
		{"not a message", gmailSendURL(sb, gmailUser), token, "text/plain", msg, 400, "badContent", "INVALID_ARGUMENT"},
		{"no recipients", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte("Subject: x\r\n\r\nbody\r\n"), 400, "invalidArgument", "INVALID_ARGUMENT"},
		{"over 35 MB", gmailSendURL(sb, gmailUser), token, "message/rfc822", append([]byte(plainMessage), make([]byte, devsandbox.GmailMaxUploadBytes)...), 413, "uploadTooLarge", "OUT_OF_RANGE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := doRequest(t, sb, "POST", tc.url, tc.token, tc.contentType, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, tc.status, r.body)
			}
			e := r.googleErr(t)
			if e.Error.Errors[0].Reason != tc.reason || e.Error.Status != tc.googleStatus {
				t.Errorf("reason %s status %s, want %s %s", e.Error.Errors[0].Reason, e.Error.Status, tc.reason, tc.googleStatus)
			}
		})
	}
	if n := len(sb.Gmail.Messages()); n != 0 {
		t.Errorf("%d messages recorded from rejected requests", n)
	}
}

func TestGmailAPIScriptedErrors(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, gmailUser, devsandbox.GmailScope)
	throttled := devsandbox.GmailUserRateLimitExceeded
	throttled.RetryAfter = 30
	tests := []struct {
		name         string
		err          devsandbox.GmailError
		status       int
		reason       string
		googleStatus string
		retryAfter   string
		domain       string
	}{
		{"insufficient permissions", devsandbox.GmailInsufficientPermissions, 403, "insufficientPermissions", "PERMISSION_DENIED", "", ""},
		{"domain policy", devsandbox.GmailDomainPolicy, 403, "domainPolicy", "PERMISSION_DENIED", "", ""},
		{"rate limit", devsandbox.GmailRateLimitExceeded, 429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "", ""},
		{"user rate limit with Retry-After", throttled, 429, "userRateLimitExceeded", "RESOURCE_EXHAUSTED", "30", ""},
		{"backend error", devsandbox.GmailBackendError, 503, "backendError", "UNAVAILABLE", "", ""},
		{"daily limit", devsandbox.GmailDailyLimitExceeded, 403, "dailyLimitExceeded", "PERMISSION_DENIED", "", "usageLimits"},
		{"mail service not enabled", devsandbox.GmailMailServiceNotEnabled, 400, "failedPrecondition", "INVALID_ARGUMENT", "", ""},
		{"sending limit", devsandbox.GmailSendingLimitExceeded(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)), 429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Gmail.FailNext(gmailUser, tc.err)
			r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d", r.status, tc.status)
			}
			domain := []string{}
			if tc.domain != "" {
				domain = append(domain, tc.domain)
			}
			e := r.googleErr(t, domain...)
			if e.Error.Errors[0].Reason != tc.reason || e.Error.Status != tc.googleStatus || r.header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("got %s %s Retry-After %q", e.Error.Errors[0].Reason, e.Error.Status, r.header.Get("Retry-After"))
			}
			if r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage)); r.status != http.StatusOK {
				t.Errorf("after the scripted error: %d %s", r.status, r.body)
			}
		})
	}
	e := devsandbox.GmailDomainPolicy
	sb.Gmail.FailAlways(gmailUser, &e)
	for range 2 {
		if r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage)); r.status != http.StatusForbidden {
			t.Errorf("FailAlways: %d", r.status)
		}
	}
	sb.Gmail.FailAlways(gmailUser, nil)
	if r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage)); r.status != http.StatusOK {
		t.Errorf("cleared: %d", r.status)
	}
}

// TestGmailAPISendsAsTheUser: a From that is neither the user nor a
// send-as alias is replaced by the user's address, as Gmail does.
func TestGmailAPISendsAsTheUser(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, gmailUser, devsandbox.GmailSendScope)
	sb.Gmail.AddSendAs(gmailUser, "Alias@Gmail.test")
	tests := []struct {
		name, from, wantFrom, wantField string
	}{
		{"the user", "Some One <someone@gmail.test>", gmailUser, "From: Some One <someone@gmail.test>"},
		{"an alias", "alias@gmail.test", "alias@gmail.test", "From: alias@gmail.test"},
		{"another address keeps its name", "Boss <boss@gmail.test>", gmailUser, "From: \"Boss\" <someone@gmail.test>"},
		{"no From", "", gmailUser, "From: <someone@gmail.test>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := "To: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
			if tc.from != "" {
				raw = "From: " + tc.from + "\r\n" + raw
			}
			before := len(sb.Gmail.Messages())
			if r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(raw)); r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.body)
			}
			msgs := sb.Gmail.Messages()
			if len(msgs) != before+1 {
				t.Fatalf("%d messages", len(msgs))
			}
			m := msgs[before]
			if m.From != tc.wantFrom || bytes.Count(m.Data, []byte("From:")) != 1 || !bytes.Contains(m.Data, []byte(tc.wantField+"\r\n")) {
				t.Errorf("from %q, message:\n%s", m.From, m.Data)
			}
		})
	}
}

// TestGmailAPIConcurrency: requests held in flight are counted per user,
// and beyond SetMaxConcurrent answered 429.
func TestGmailAPIConcurrency(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, gmailUser, devsandbox.GmailScope)
	sb.Gmail.SetMaxConcurrent(2)
	release := sb.Gmail.HoldRequests()
	t.Cleanup(release)
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range statuses {
		wg.Go(func() {
			statuses[i] = postStatus(sb, gmailSendURL(sb, gmailUser), token, plainMessage)
		})
	}
	awaitCond(t, "two requests in flight", func() bool { return sb.Gmail.InFlight(gmailUser) == 2 })
	r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage))
	if r.status != http.StatusTooManyRequests || r.googleErr(t).Error.Errors[0].Reason != "rateLimitExceeded" {
		t.Errorf("third concurrent request: %d %s", r.status, r.body)
	}
	release()
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("held request %d: %d", i, st)
		}
	}
	if sb.Gmail.PeakConcurrency(gmailUser) != 2 || sb.Gmail.InFlight(gmailUser) != 0 || len(sb.Gmail.Messages()) != 2 {
		t.Errorf("peak %d, in flight %d, %d messages", sb.Gmail.PeakConcurrency(gmailUser), sb.Gmail.InFlight(gmailUser), len(sb.Gmail.Messages()))
	}
}

// postStatus sends a message/rfc822 upload and returns the answer's
// status (0 when none came); unlike doRequest it may run on any goroutine.
func postStatus(sb *devsandbox.Sandbox, url, token, msg string) int {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(msg))
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "message/rfc822")
	resp, err := sandboxClient(sb).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
