package gmailapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestNextPacificMidnight(t *testing.T) {
	tests := []struct {
		now, want string
	}{
		{"2030-07-01T06:59:00Z", "2030-07-01T07:00:00Z"}, // 23:59 PDT
		{"2030-07-01T07:00:00Z", "2030-07-02T07:00:00Z"}, // midnight PDT: the next one
		{"2030-01-15T20:00:00Z", "2030-01-16T08:00:00Z"}, // noon PST
		{"2030-03-10T09:00:00Z", "2030-03-11T07:00:00Z"}, // 1 am PST, the day PDT starts
	}
	for _, tt := range tests {
		now, _ := time.Parse(time.RFC3339, tt.now)
		want, _ := time.Parse(time.RFC3339, tt.want)
		if got := nextPacificMidnight(now); !got.Equal(want) {
			t.Errorf("nextPacificMidnight(%s) = %s, want %s", tt.now, got.UTC().Format(time.RFC3339), tt.want)
		}
	}
}

func TestReadAPIErrorRetryAt(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	const limit = `{"error":{"code":429,"message":"User-rate limit exceeded.  Retry after 2030-01-02T05:06:07.890Z (Mail sending)","errors":[{"domain":"global","reason":"rateLimitExceeded","message":"x"}],"status":"RESOURCE_EXHAUSTED"}}`
	const past = `{"error":{"code":429,"message":"User-rate limit exceeded.  Retry after 2020-01-02T05:06:07.890Z (Mail sending)","errors":[{"reason":"rateLimitExceeded"}]}}`
	tests := []struct {
		name, body, retryAfter string
		want                   time.Time
		reason                 string
	}{
		{"the message's time", limit, "", time.Date(2030, 1, 2, 5, 6, 7, 890e6, time.UTC), "rateLimitExceeded"},
		{"Retry-After first", limit, "60", now.Add(time.Minute), "rateLimitExceeded"},
		{"a past time is no time", past, "", time.Time{}, "rateLimitExceeded"},
		{"not JSON", "<html>busy</html>", "", time.Time{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if tt.retryAfter != "" {
				rec.Header().Set("Retry-After", tt.retryAfter)
			}
			rec.WriteHeader(http.StatusTooManyRequests)
			rec.WriteString(tt.body)
			e := readAPIError(rec.Result(), now)
			if !e.RetryAt.Equal(tt.want) || e.Reason != tt.reason || e.Message == "" {
				t.Errorf("got %+v, want RetryAt %v reason %q", e, tt.want, tt.reason)
			}
			f := classifyAPI(e)
			if f.Err.Reply.Code != 451 || f.Err.RetryAt.IsZero() {
				t.Errorf("classified %+v", f.Err)
			}
		})
	}
}
