package httpsend_test

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// TestRetryAfterOverflow: delay-seconds too large for a time.Duration
// (RFC 9110 §10.2.3 sets no bound) must not wrap into a time in the past,
// which would read as "retry now".
func TestRetryAfterOverflow(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, v := range []string{"9223372037", "99999999999", "9223372036854775807"} {
		if got := httpsend.RetryAfter(v, now); !got.IsZero() && got.Before(now) {
			t.Errorf("RetryAfter(%q) = %v, before now (%v)", v, got, now)
		}
	}
}
