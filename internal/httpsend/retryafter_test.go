package httpsend_test

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Time
	}{
		{"", time.Time{}},
		{"0", now},
		{"120", now.Add(2 * time.Minute)},
		{" 7 ", now.Add(7 * time.Second)},
		{"Wed, 21 Oct 2015 07:28:00 GMT", time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)},
		{"-5", time.Time{}},
		{"soon", time.Time{}},
	}
	for _, tt := range tests {
		if got := httpsend.RetryAfter(tt.value, now); !got.Equal(tt.want) {
			t.Errorf("RetryAfter(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
}
