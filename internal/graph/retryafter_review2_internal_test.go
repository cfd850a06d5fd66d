package graph

import (
	"testing"
	"time"
)

// TestRetryAtOverflow: as httpsend.RetryAfter, graph's own parser must not
// wrap a huge delay-seconds into the past.
func TestRetryAtOverflow(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, v := range []string{"9223372037", "99999999999"} {
		if got := retryAt(v, now); !got.IsZero() && got.Before(now) {
			t.Errorf("retryAt(%q) = %v, before now (%v)", v, got, now)
		}
	}
}
