package config

import (
	"testing"
	"time"
)

// TestParseDurationDays: a leading number of days is 24 hours each, exactly
// (README "Configuration reference").
func TestParseDurationDays(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"30d", 30 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{".5d", 12 * time.Hour},
		{"5.d", 5 * 24 * time.Hour},
		{"0.1d", 144 * time.Minute},
		{"0d1s", time.Second},
		{"106751d23h47m16.854775807s", time.Duration(1<<63 - 1)},
	} {
		if got, err := parseDuration(tc.in); err != nil || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"0d", "d", "-1d", "1D", "1d1d", "1d-5s", "1h1d", "1 d", "106752d"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}
