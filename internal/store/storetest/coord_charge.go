package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// charge charges key at base+d with c, which must land.
func (e *coordEnv) charge(key string, c store.Charge, d time.Duration, l store.SharedLimits) {
	e.t.Helper()
	if err := e.c.Charge(e.ctx, key, c, e.at(d), l); err != nil {
		e.t.Fatalf("Charge(%s, %+v, base%+v): %v", key, c, d, err)
	}
}

// counts is a Charge of messages and recipients in base's quarter-hours:
// each triple is (quarter-hours after base, messages, recipients).
func (e *coordEnv) counts(triples ...int) store.Charge {
	var c store.Charge
	for i := 0; i+2 < len(triples); i += 3 {
		c.Counts = append(c.Counts, store.BucketCount{
			Bucket: bucketOf(e.at(time.Duration(triples[i]) * quarter)), Msgs: triples[i+1], Rcpts: triples[i+2]})
	}
	return c
}

var chargeTests = []coordTest{
	{"counts go into their quarter-hours", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 5, DailyRcpts: 10}
		e.charge("a", e.counts(0, 3, 4, 1, 1, 1), 20*time.Minute, l)
		e.wantUsage("a", 20*time.Minute, 4, 5)
		e.grant("a", 20*time.Minute, l)
		// base's quarter-hour, charged, is the oldest: it frees the quota.
		e.refused("a", 20*time.Minute, l, dailyMsgsRefusal(l, e.at(day)))
		e.wantUsage("a", day, 2, 1)
	}},
	{"a charge is never refused", func(t *testing.T, e *coordEnv) {
		l := store.SharedLimits{DailyMsgs: 2, DailyRcpts: 2, PerMinute: 1, Burst: 1}
		g := e.grant("a", 0, l)
		e.rcpt("a", g, 0, l)
		e.charge("a", e.counts(0, 5, 7), 0, l)
		e.wantUsage("a", 0, 6, 8)
		e.refused("a", time.Minute, l, dailyMsgsRefusal(l, e.at(day)))
	}},
	{"the same quarter-hour twice adds up", func(t *testing.T, e *coordEnv) {
		e.charge("a", e.counts(2, 1, 2, 2, 3, 4), 40*time.Minute, store.SharedLimits{})
		e.charge("a", e.counts(2, 1, 0), 40*time.Minute, store.SharedLimits{})
		e.wantUsage("a", 40*time.Minute, 5, 6)
	}},
	{"quarter-hours out of the window count nothing", func(t *testing.T, e *coordEnv) {
		e.charge("a", e.counts(-96, 4, 4, -95, 1, 2), 0, store.SharedLimits{})
		e.wantUsage("a", 0, 1, 2)
		e.charge("b", e.counts(0, 0, 0), 0, store.SharedLimits{})
		e.wantUsage("b", 0, 0, 0)
	}},
	{"the rate debt moves the limiter ahead", func(t *testing.T, e *coordEnv) {
		l := sixAMinute // one every 10s, three at once
		e.charge("a", store.Charge{RateDebt: 20 * time.Second}, 0, l)
		e.grant("a", 0, l)
		e.refused("a", 0, l, rateRefusal(l, e.at(10*time.Second)))
		e.wantUsage("a", 0, 1, 0)
		// On top of the messages the limiter counted already.
		e.grant("b", 0, l)
		e.grant("b", 0, l)
		e.charge("b", store.Charge{RateDebt: 5 * time.Second}, 0, l)
		e.refused("b", 0, l, rateRefusal(l, e.at(5*time.Second)))
	}},
	{"the rate debt leaves the limiter empty at most", func(t *testing.T, e *coordEnv) {
		l := sixAMinute
		e.charge("a", store.Charge{RateDebt: time.Hour}, 0, l)
		e.refused("a", 0, l, rateRefusal(l, e.at(10*time.Second)))
		e.grant("a", 10*time.Second, l)
		// Nor does it move a limiter back (another instance's clock is
		// ahead of this one's).
		for range 3 {
			e.grant("b", 20*time.Second, l)
		}
		e.charge("b", store.Charge{RateDebt: time.Second}, 0, l)
		e.refused("b", 20*time.Second, l, rateRefusal(l, e.at(30*time.Second)))
	}},
	{"without a rate limit the debt is ignored", func(t *testing.T, e *coordEnv) {
		e.charge("a", store.Charge{RateDebt: time.Hour}, 0, store.SharedLimits{})
		e.grant("a", 0, sixAMinute)
	}},
}

// adopt makes owner hold n slots of key at base+d until base+until and
// checks which.
func (e *coordEnv) adopt(key, owner string, n int, d, until time.Duration, want ...int) {
	e.t.Helper()
	got, err := e.c.AdoptSlots(e.ctx, key, owner, n, e.at(d), e.at(until))
	if err != nil || !slices.Equal(got, want) {
		e.t.Fatalf("AdoptSlots(%s, %s, %d, base%+v) = %v, %v; want %v", key, owner, n, d, got, err, want)
	}
}

var adoptTests = []coordTest{
	{"adopted slots go beyond the size and make acquirers wait", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 2, 0, 0, time.Minute)
		e.acquire("k", "B", 2, 1, 0, time.Minute)
		e.adopt("k", "A", 3, 0, time.Minute, 0, 2, 3)
		e.wantInUse("k", 0, 4)
		e.full("k", "C", 2, 0)
		e.releaseSlot("k", "B", 1)
		e.full("k", "C", 2, 0) // A's three are still over the cap
		e.releaseSlot("k", "A", 3)
		e.full("k", "C", 2, 0)
		e.adopt("k", "A", 1, 0, time.Minute, 0) // two of A's connections closed
		e.acquire("k", "C", 2, 1, 0, time.Minute)
		e.full("k", "D", 2, 0)
	}},
	{"the owner's leases are kept, expired ones too", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 3, 0, 0, time.Minute)
		e.acquire("k", "B", 3, 1, 0, 3*time.Minute)
		e.acquire("k", "A", 3, 2, 0, time.Minute)
		e.adopt("k", "A", 2, 2*time.Minute, 3*time.Minute, 0, 2)
		e.wantInUse("k", 150*time.Second, 3)
		e.extend("A", 150*time.Second, 4*time.Minute)
		e.wantInUse("k", 3*time.Minute+time.Second, 2)
	}},
	{"a lease taken over is replaced by a free slot", func(t *testing.T, e *coordEnv) {
		e.acquire("k", "A", 1, 0, 0, time.Minute)
		e.acquire("k", "B", 1, 0, 2*time.Minute, 3*time.Minute) // A's lapsed
		e.adopt("k", "A", 1, 2*time.Minute, 3*time.Minute, 1)
		e.wantInUse("k", 2*time.Minute, 2)
		e.full("k", "C", 1, 2*time.Minute)
	}},
	{"fewer frees the lowest last", func(t *testing.T, e *coordEnv) {
		e.adopt("k", "A", 3, 0, time.Minute, 0, 1, 2)
		e.adopt("k", "A", 1, 0, time.Minute, 0)
		e.adopt("l", "A", 1, 0, time.Minute, 0)
		e.adopt("k", "A", 0, 0, time.Minute)
		e.wantInUse("k", 0, 0)
		e.wantInUse("l", 0, 1)
	}},
	{"adopted slots are renewed, contended and released as any", func(t *testing.T, e *coordEnv) {
		e.adopt("k", "A", 2, 0, time.Minute, 0, 1)
		e.want("k", "B", 2*time.Minute)
		e.extend("A", time.Minute-time.Second, 3*time.Minute, "k")
		e.wantInUse("k", 2*time.Minute, 2)
		if err := e.c.ReleaseSlots(e.ctx, "A"); err != nil {
			t.Fatal(err)
		}
		e.wantInUse("k", 2*time.Minute, 0)
	}},
}
