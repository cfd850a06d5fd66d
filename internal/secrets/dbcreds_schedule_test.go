package secrets

import (
	"testing"
	"time"
)

// TestDatabaseLeaseSchedule checks when a lease is renewed or replaced
// after Vault granted it time: renewed at two thirds of a full grant;
// replaced a third of the lease duration before a grant it cannot extend
// ends, at once when less than that is left.
func TestDatabaseLeaseSchedule(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	hour := time.Hour
	tests := []struct {
		name          string
		granted       time.Duration
		renewable     bool
		wantRenewAt   time.Duration // after now; 0: none
		wantReplaceAt time.Duration // after now; -1: none
		wantReason    string
	}{
		{"full grant", hour, true, 40 * time.Minute, -1, ""},
		{"capped by the max TTL", 50 * time.Minute, true, 0, 30 * time.Minute, "max_ttl"},
		{"capped, a third left", 20 * time.Minute, true, 0, 0, "max_ttl"},
		{"capped, nearly nothing left", time.Second, true, 0, 0, "max_ttl"},
		{"not renewable", hour, false, 0, 40 * time.Minute, "not_renewable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := dbLease{duration: hour}
			got := l.extended(now, tc.granted, tc.renewable)
			if want := now.Add(tc.granted); !got.expiry.Equal(want) {
				t.Errorf("expiry %v, want %v", got.expiry, want)
			}
			if tc.wantRenewAt != 0 {
				if !got.renewAt.Equal(now.Add(tc.wantRenewAt)) || !got.replaceAt.IsZero() {
					t.Errorf("renewAt %v replaceAt %v, want renewal at +%v", got.renewAt, got.replaceAt, tc.wantRenewAt)
				}
				if !got.next().Equal(got.renewAt) {
					t.Errorf("next %v, want the renewal", got.next())
				}
				return
			}
			if !got.renewAt.IsZero() || !got.replaceAt.Equal(now.Add(tc.wantReplaceAt)) || got.replaceReason != tc.wantReason {
				t.Errorf("renewAt %v replaceAt %v (%s), want replacement at +%v (%s)", got.renewAt, got.replaceAt, got.replaceReason, tc.wantReplaceAt, tc.wantReason)
			}
			if !got.next().Equal(got.replaceAt) {
				t.Errorf("next %v, want the replacement", got.next())
			}
		})
	}
}

// TestDatabaseRetryDelays: short leases are retried soon, long ones at
// most every 30 seconds.
func TestDatabaseRetryDelays(t *testing.T) {
	tests := []struct {
		duration, first, ceiling time.Duration
	}{
		{time.Second, 100 * time.Millisecond, 250 * time.Millisecond},
		{4 * time.Second, 200 * time.Millisecond, time.Second},
		{time.Hour, time.Second, 30 * time.Second},
		{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		first, ceiling := retryDelays(tc.duration)
		if first != tc.first || ceiling != tc.ceiling {
			t.Errorf("retryDelays(%v) = %v, %v; want %v, %v", tc.duration, first, ceiling, tc.first, tc.ceiling)
		}
	}
}
