package storetest

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

const day = 24 * time.Hour

func dailyMsgsRefusal(l store.SharedLimits, retry time.Time) store.Refusal {
	return store.Refusal{Kind: store.RefusedDailyMsgs, Limit: l.DailyMsgs, RetryAt: retry}
}

func dailyRcptsRefusal(l store.SharedLimits, retry time.Time) store.Refusal {
	return store.Refusal{Kind: store.RefusedDailyRcpts, Limit: l.DailyRcpts, RetryAt: retry}
}

var dailyMsgTests = []coordTest{
	{"a window of 24 hours of quarter-hours", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 3}
		if g := e.grant("a", time.Minute, l); g.Bucket != bucketOf(e.base) {
			t.Fatalf("Bucket %d, want %d (base's quarter-hour)", g.Bucket, bucketOf(e.base))
		}
		e.grant("a", 16*time.Minute, l)
		e.grant("a", 31*time.Minute, l)
		// The first message's quarter-hour leaves the window at base+24h.
		e.refused("a", 46*time.Minute, l, dailyMsgsRefusal(l, e.at(day)))
		e.refused("a", day-time.Nanosecond, l, dailyMsgsRefusal(l, e.at(day)))
		e.grant("a", day, l)
		e.refused("a", day, l, dailyMsgsRefusal(l, e.at(day+quarter)))
	}},
	{"usage counts the window", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{}
		g := e.grant("a", 0, l)
		e.rcpt("a", g, 0, l)
		e.rcpt("a", g, 0, l)
		g = e.grant("a", quarter, l)
		e.rcpt("a", g, quarter, l)
		e.wantUsage("a", quarter, 2, 3)
		e.wantUsage("a", day-time.Nanosecond, 2, 3)
		e.wantUsage("a", day, 1, 1)
		e.wantUsage("a", day+quarter, 0, 0)
		e.wantUsage("unknown", 0, 0, 0)
	}},
	{"release takes back from the grant's quarter-hour", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 2}
		first := e.grant("a", 0, l)
		e.grant("a", quarter, l)
		e.refused("a", 2*quarter, l, dailyMsgsRefusal(l, e.at(day)))
		e.release("a", first, 1, 0, 2*quarter, l)
		e.wantUsage("a", 2*quarter, 1, 0)
		e.grant("a", 2*quarter, l)
		// base's quarter-hour counts nothing now: the oldest that does
		// is the next one.
		e.refused("a", 2*quarter, l, dailyMsgsRefusal(l, e.at(day+quarter)))
	}},
	{"counts never go below zero", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 2}
		first := e.grant("a", 0, l)
		e.grant("a", quarter, l)
		e.release("a", first, 1, 0, quarter, l)
		e.release("a", first, 1, 0, quarter, l)
		e.wantUsage("a", quarter, 1, 0)
		e.grant("a", quarter, l)
		e.refused("a", quarter, l, dailyMsgsRefusal(l, e.at(day+quarter)))
	}},
	{"a release after the window changes nothing", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 2}
		old := e.grant("a", 0, l)
		e.rcpt("a", old, 0, l)
		g := e.grant("a", day, l)
		e.rcpt("a", g, day, l)
		e.release("a", old, 1, 1, day, l)
		e.wantUsage("a", day, 1, 1)
	}},
	{"daily messages are checked first and take no token", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 1, Burst: 1, DailyMsgs: 1}
		g := e.grant("a", 0, l)
		e.refused("a", 0, l, dailyMsgsRefusal(l, e.at(day)))
		e.refused("a", time.Minute, l, dailyMsgsRefusal(l, e.at(day)))
		// g's token is spent (its minute is over); the refusals took none.
		e.release("a", g, 1, 0, time.Minute, l)
		e.grant("a", time.Minute, l)
	}},
	{"a rate refusal counts no message", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 1, Burst: 1, DailyMsgs: 2}
		e.grant("a", 0, l)
		e.refused("a", 0, l, rateRefusal(l, e.at(time.Minute)))
		e.grant("a", time.Minute, l)
		e.refused("a", 2*time.Minute, l, dailyMsgsRefusal(l, e.at(day)))
	}},
	{"buckets of another width", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 1, BucketWidth: time.Hour}
		hour := e.base.Truncate(time.Hour).Sub(e.base) // base's hour, relative to base
		g := e.grant("a", hour+59*time.Minute, l)
		if want := e.at(hour).UnixNano() / int64(time.Hour); g.Bucket != want {
			t.Fatalf("Bucket %d, want %d", g.Bucket, want)
		}
		e.refused("a", hour+61*time.Minute, l, dailyMsgsRefusal(l, e.at(hour+day)))
		e.grant("a", hour+day, l)
	}},
}

var dailyRcptTests = []coordTest{
	{"limit and retry", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyRcpts: 2}
		g := e.grant("a", time.Minute, l)
		e.rcpt("a", g, time.Minute, l)
		e.rcpt("a", g, time.Minute, l)
		e.rcptRefused("a", g, time.Minute, l, dailyRcptsRefusal(l, e.at(day)))
		e.wantUsage("a", time.Minute, 1, 2)
		g = e.grant("a", day, l)
		e.rcpt("a", g, day, l)
	}},
	{"counted in the grant's quarter-hour", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyRcpts: 1}
		g := e.grant("a", 14*time.Minute, l)
		e.rcpt("a", g, 20*time.Minute, l)
		e.rcptRefused("a", g, 21*time.Minute, l, dailyRcptsRefusal(l, e.at(day)))
		e.wantUsage("a", day, 0, 0)
		e.rcpt("a", e.grant("a", day, l), day, l)
	}},
	{"release takes recipients back", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyRcpts: 2}
		g := e.grant("a", 0, l)
		e.rcpt("a", g, 0, l)
		e.rcpt("a", g, 0, l)
		e.release("a", g, 0, 2, time.Minute, l)
		e.wantUsage("a", time.Minute, 1, 0)
		e.rcpt("a", g, time.Minute, l)
		e.release("a", g, 1, 1, 2*time.Minute, l)
		e.wantUsage("a", 2*time.Minute, 0, 0)
	}},
	{"recipients count without a limit", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 5}
		g := e.grant("a", 0, l)
		for range 3 {
			e.rcpt("a", g, 0, l)
		}
		e.wantUsage("a", 0, 1, 3)
	}},
}

var keyTests = []coordTest{
	{"keys are independent", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{PerMinute: 1, Burst: 1, DailyMsgs: 1, DailyRcpts: 1}
		g := e.grant("a@example.com", 0, l)
		e.rcpt("a@example.com", g, 0, l)
		e.refused("a@example.com", 0, l, dailyMsgsRefusal(l, e.at(day)))
		g = e.grant("b@example.com", 0, l)
		e.rcpt("b@example.com", g, 0, l)
		e.wantUsage("a@example.com", 0, 1, 1)
		e.wantUsage("b@example.com", 0, 1, 1)
		e.acquire("a@example.com", "A", 1, 0, 0, time.Minute)
		e.acquire("b@example.com", "A", 1, 0, 0, time.Minute)
		e.wantInUse("a@example.com", 0, 1)
	}},
}
