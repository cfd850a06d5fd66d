package storetest

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// sixAMinute is a rate of one every 10 seconds, three at once.
var sixAMinute = store.SharedLimits{PerMinute: 6, Burst: 3}

func rateRefusal(l store.SharedLimits, retry time.Time) store.Refusal {
	return store.Refusal{Kind: store.RefusedRate, Limit: l.PerMinute, RetryAt: retry}
}

var rateTests = []coordTest{
	{"burst at once then one per interval", func(t *testing.T, e *coordEnv) {
		l := sixAMinute
		for i := 1; i <= 3; i++ {
			g := e.grant("a", 0, l)
			if want := e.at(time.Duration(i) * 10 * time.Second).UnixNano(); g.RateAt != want {
				t.Fatalf("grant %d: RateAt base%+v, want base%+v", i, time.Duration(g.RateAt-e.base.UnixNano()), time.Duration(i)*10*time.Second)
			}
			if g.Bucket != bucketOf(e.base) {
				t.Fatalf("grant %d: Bucket %d, want %d", i, g.Bucket, bucketOf(e.base))
			}
		}
		e.refused("a", 0, l, rateRefusal(l, e.at(10*time.Second)))
		e.refused("a", 10*time.Second-time.Nanosecond, l, rateRefusal(l, e.at(10*time.Second)))
		e.grant("a", 10*time.Second, l)
		e.refused("a", 10*time.Second, l, rateRefusal(l, e.at(20*time.Second)))
		// A long pause refills the burst, and no more.
		for range 3 {
			e.grant("a", 10*time.Minute, l)
		}
		e.refused("a", 10*time.Minute, l, rateRefusal(l, e.at(10*time.Minute+10*time.Second)))
	}},
	{"an interval that is no whole number of milliseconds is exact", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 7, Burst: 1}
		interval := time.Minute / 7
		e.grant("a", 0, l)
		e.refused("a", time.Second, l, rateRefusal(l, e.at(interval)))
		e.refused("a", interval-time.Nanosecond, l, rateRefusal(l, e.at(interval)))
		e.grant("a", interval, l)
	}},
	{"a Burst of 0 is PerMinute", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 4}
		for range 4 {
			e.grant("a", 0, l)
		}
		e.refused("a", 0, l, rateRefusal(l, e.at(15*time.Second)))
	}},
	{"a refusal takes no token and counts no message", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 1, Burst: 1}
		e.grant("a", 0, l)
		for range 5 {
			e.refused("a", time.Second, l, rateRefusal(l, e.at(time.Minute)))
		}
		e.wantUsage("a", time.Second, 1, 0)
		e.grant("a", time.Minute, l)
	}},
	{"without a rate limit every message is granted", func(t *testing.T, e *coordEnv) {
		for range 20 {
			if g := e.grant("a", 0, store.SharedLimits{}); g.RateAt != 0 {
				t.Fatalf("RateAt %d without a rate limit, want 0", g.RateAt)
			}
		}
		e.wantUsage("a", 0, 20, 0)
	}},
	{"releasing the message gives its token back", func(t *testing.T, e *coordEnv) {
		l := sixAMinute
		e.grant("a", 0, l)
		e.grant("a", 0, l)
		g := e.grant("a", 0, l)
		e.release("a", g, 1, 0, time.Second, l)
		e.grant("a", time.Second, l)
		e.refused("a", time.Second, l, rateRefusal(l, e.at(10*time.Second)))
	}},
	{"releasing recipients only keeps the token", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 6, Burst: 1}
		g := e.grant("a", 0, l)
		e.rcpt("a", g, 0, l)
		e.release("a", g, 0, 1, time.Second, l)
		e.refused("a", time.Second, l, rateRefusal(l, e.at(10*time.Second)))
		e.wantUsage("a", time.Second, 1, 0)
	}},
	{"a token whose time has passed is not given back", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 6, Burst: 1}
		first := e.grant("a", 0, l)
		e.grant("a", 10*time.Second, l)
		// first's interval is over: giving it back now would let two
		// messages through in one interval.
		e.release("a", first, 1, 0, 15*time.Second, l)
		e.refused("a", 15*time.Second, l, rateRefusal(l, e.at(20*time.Second)))
		e.wantUsage("a", 15*time.Second, 1, 0)
	}},
	{"giving a token back never fills more than the burst", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 6, Burst: 2}
		e.grant("a", 0, l)
		g := e.grant("a", 5*time.Second, l)
		// At 15s one and a half tokens are back by themselves; the
		// release adds one, and the limiter is full: two at once, not
		// three.
		e.release("a", g, 1, 0, 15*time.Second, l)
		e.grant("a", 15*time.Second, l)
		e.grant("a", 15*time.Second, l)
		e.refused("a", 15*time.Second, l, rateRefusal(l, e.at(25*time.Second)))
	}},
}
