package devsandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/mail"
	"strings"
	"testing"

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

// googleErr decodes a Google APIs error body and checks it is consistent.
func (r apiResponse) googleErr(t *testing.T) googleError {
	t.Helper()
	var e googleError
	if err := json.Unmarshal(r.body, &e); err != nil || len(e.Error.Errors) != 1 {
		t.Fatalf("status %d: body is not a Google error: %.300q", r.status, r.body)
	}
	if e.Error.Code != r.status || e.Error.Message == "" || e.Error.Status == "" || e.Error.Errors[0].Domain != "global" {
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
	}{
		{"insufficient permissions", devsandbox.GmailInsufficientPermissions, 403, "insufficientPermissions", "PERMISSION_DENIED", ""},
		{"domain policy", devsandbox.GmailDomainPolicy, 403, "domainPolicy", "PERMISSION_DENIED", ""},
		{"rate limit", devsandbox.GmailRateLimitExceeded, 429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", ""},
		{"user rate limit with Retry-After", throttled, 429, "userRateLimitExceeded", "RESOURCE_EXHAUSTED", "30"},
		{"backend error", devsandbox.GmailBackendError, 503, "backendError", "UNAVAILABLE", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Gmail.FailNext(gmailUser, tc.err)
			r := doRequest(t, sb, "POST", gmailSendURL(sb, gmailUser), token, "message/rfc822", []byte(plainMessage))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d", r.status, tc.status)
			}
			e := r.googleErr(t)
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
