package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// RunCoordinator runs the conformance suite of store.Coordinator, the
// executable form of its doc comments plus what every engine must answer
// alike where they are silent:
//
//   - the rate limit is a generic cell rate algorithm in exact integer
//     nanoseconds: Burst at once, then one every minute/PerMinute; a
//     Burst of 0 is PerMinute; RetryAt is the first instant admitted;
//   - a refusal takes nothing; the daily messages are checked before the
//     rate, so a message both refuse is refused as daily_messages;
//   - a bucket counts while now is less than its start plus 24 hours;
//     RetryAt is when the oldest bucket that still counts something
//     leaves the window; counts never go below zero;
//   - messages and recipients are counted (Usage) with or without a limit;
//   - a live lease is one whose until is after now; slots go lowest
//     first; live leases above a lowered size still count against it;
//   - ExtendSlots also renews an expired lease nobody took over, never
//     one taken over; a wait counts while its until is after now, and of
//     two waits of one owner the later end counts; the contended keys
//     come sorted; ReleaseSlots also forgets the owner's waits;
//   - a Charge adds counts to their buckets and never refuses; its rate
//     debt moves the limiter ahead, never back and never past empty;
//   - AdoptSlots keeps the owner's lowest slots and leases the lowest
//     free ones, beyond the size.
//
// open returns a handle on the subtest's database: a new, empty one at
// its first call within a subtest, another instance's handle on that same
// database (its own connections) at later calls. Handles are closed when
// the subtest ends (t.Cleanup).
func RunCoordinator(t *testing.T, open func(t *testing.T) store.Coordinator) {
	groups := []struct {
		name  string
		tests []coordTest
	}{
		{"Rate", rateTests},
		{"DailyMessages", dailyMsgTests},
		{"DailyRecipients", dailyRcptTests},
		{"Keys", keyTests},
		{"Slots", slotTests},
		{"Contention", contentionTests},
		{"Charge", chargeTests},
		{"AdoptSlots", adoptTests},
		{"Concurrency", concurrencyTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newCoordEnv(t, open))
				})
			}
		})
	}
}

type coordTest struct {
	name string
	run  func(t *testing.T, e *coordEnv)
}

// coordEnv is one subtest's coordinator. Times in the suite are relative
// to base, a quarter-hour boundary near now, so that the daily quotas'
// buckets begin at base + n×15m.
type coordEnv struct {
	t    *testing.T
	c    store.Coordinator
	open func(t *testing.T) store.Coordinator
	ctx  context.Context
	base time.Time
}

const quarter = 15 * time.Minute

func newCoordEnv(t *testing.T, open func(t *testing.T) store.Coordinator) *coordEnv {
	return &coordEnv{t: t, c: open(t), open: open, ctx: t.Context(),
		base: time.Now().UTC().Truncate(quarter)}
}

// at is base moved by d.
func (e *coordEnv) at(d time.Duration) time.Time { return e.base.Add(d) }

// bucketOf is the quarter-hour of t, as a grant names it.
func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(quarter) }

// grant reserves a message that must be granted.
func (e *coordEnv) grant(key string, d time.Duration, l store.SharedLimits) *store.Grant {
	e.t.Helper()
	g, err := e.c.ReserveMessage(e.ctx, key, e.at(d), l)
	if err != nil {
		e.t.Fatalf("ReserveMessage(%s, base%+v): %v", key, d, err)
	}
	return g
}

// refused reserves a message that must be refused as want.
func (e *coordEnv) refused(key string, d time.Duration, l store.SharedLimits, want store.Refusal) {
	e.t.Helper()
	g, err := e.c.ReserveMessage(e.ctx, key, e.at(d), l)
	if err == nil {
		e.t.Fatalf("ReserveMessage(%s, base%+v) = %+v, want refused by %s", key, d, g, want.Kind)
	}
	e.wantRefusal("ReserveMessage", d, err, want)
}

// rcpt reserves a recipient that must be granted.
func (e *coordEnv) rcpt(key string, g *store.Grant, d time.Duration, l store.SharedLimits) {
	e.t.Helper()
	if err := e.c.ReserveRcpt(e.ctx, key, g, e.at(d), l); err != nil {
		e.t.Fatalf("ReserveRcpt(%s, base%+v): %v", key, d, err)
	}
}

// rcptRefused reserves a recipient that must be refused as want.
func (e *coordEnv) rcptRefused(key string, g *store.Grant, d time.Duration, l store.SharedLimits, want store.Refusal) {
	e.t.Helper()
	err := e.c.ReserveRcpt(e.ctx, key, g, e.at(d), l)
	if err == nil {
		e.t.Fatalf("ReserveRcpt(%s, base%+v) granted, want refused by %s", key, d, want.Kind)
	}
	e.wantRefusal("ReserveRcpt", d, err, want)
}

func (e *coordEnv) wantRefusal(call string, d time.Duration, err error, want store.Refusal) {
	e.t.Helper()
	r, ok := errors.AsType[*store.Refusal](err)
	if !ok {
		e.t.Fatalf("%s(base%+v): %v, want a *store.Refusal", call, d, err)
	}
	if !sameRefusal(r, want) {
		e.t.Fatalf("%s(base%+v) refused by %s (limit %d), retry at base%+v; want %s (limit %d), retry at base%+v",
			call, d, r.Kind, r.Limit, r.RetryAt.Sub(e.base), want.Kind, want.Limit, want.RetryAt.Sub(e.base))
	}
}

func (e *coordEnv) release(key string, g *store.Grant, msgs, rcpts int, d time.Duration, l store.SharedLimits) {
	e.t.Helper()
	if err := e.c.Release(e.ctx, key, g, msgs, rcpts, e.at(d), l); err != nil {
		e.t.Fatalf("Release(%s, %d, %d, base%+v): %v", key, msgs, rcpts, d, err)
	}
}

// wantUsage checks Usage(key) at base+d.
func (e *coordEnv) wantUsage(key string, d time.Duration, msgs, rcpts int) {
	e.t.Helper()
	m, r, err := e.c.Usage(e.ctx, key, e.at(d))
	if err != nil {
		e.t.Fatalf("Usage(%s, base%+v): %v", key, d, err)
	}
	if m != msgs || r != rcpts {
		e.t.Fatalf("Usage(%s, base%+v) = %d messages, %d recipients; want %d, %d", key, d, m, r, msgs, rcpts)
	}
}

// sameRefusal compares refusals, their times as instants.
func sameRefusal(r *store.Refusal, want store.Refusal) bool {
	return r.Kind == want.Kind && r.Limit == want.Limit && r.RetryAt.Equal(want.RetryAt)
}
