package main

import (
	"strings"
	"testing"
)

// The latency scenario's targets say which provider delay they assume
// and compare the queue with the relay in direct mode under that delay.
func TestLatencyTargets(t *testing.T) {
	tests := []struct {
		name             string
		accept, e2e      float64
		undelivered      int
		wantMet          []bool
		wantAcceptReport string
	}{
		{"met", 7.3, 1.8, 0, []bool{true, true, true}, "7.30×"},
		{"accept short", 0.9, 0.6, 0, []bool{false, true, true}, "0.90×"},
		{"end-to-end short and lost mail", 1.2, 0.4, 3, []bool{true, false, false}, "1.20×"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := latencyResult{DataDelay: "20ms"}
			l.Queue.Accept.ModeRatio, l.Queue.EndToEnd.ModeRatio, l.Queue.Undelivered = tc.accept, tc.e2e, tc.undelivered
			got := latencyTargets(l)
			if len(got) != len(tc.wantMet) {
				t.Fatalf("%d targets, want %d", len(got), len(tc.wantMet))
			}
			for i, tg := range got {
				if !strings.HasPrefix(tg.What, "provider answering DATA after 20ms: ") {
					t.Errorf("target %q does not say which provider delay it assumes", tg.What)
				}
				if tg.Met != tc.wantMet[i] {
					t.Errorf("%q: met = %v, want %v (got %s)", tg.What, tg.Met, tc.wantMet[i], tg.Got)
				}
			}
			if got[0].Got != tc.wantAcceptReport {
				t.Errorf("accept reported as %q, want %q", got[0].Got, tc.wantAcceptReport)
			}
		})
	}
}
