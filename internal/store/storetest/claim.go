package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

var claimTests = []test{
	{"OnlyDue", testClaimOnlyDue},
	{"NotHeld", testClaimNotHeld},
	{"OnlyWithPendingRecipients", testClaimOnlyPending},
	{"OldestNextAttemptFirstAndLimit", testClaimOrderAndLimit},
	{"SkipAccounts", testClaimSkip},
	{"ClaimedEnvelope", testClaimedEnvelope},
	{"LeaseIsExclusive", testClaimExclusive},
	{"ConcurrentClaimers", testClaimConcurrent},
	{"ExpiredLeaseTakenOver", testClaimExpired},
	{"Extend", testExtend},
	{"ReleaseLeases", testReleaseLeases},
	{"EnqueuedLeased", testEnqueuedLeased},
	{"EnqueuedLeasedOwnerDies", testEnqueuedLeasedOwnerDies},
}

func testClaimOnlyDue(t *testing.T, e *env) {
	e.enqueue(e.msg("past", withNext(e.at(-time.Hour))))
	e.enqueue(e.msg("now", withNext(e.base)))
	e.enqueue(e.msg("future", withNext(e.at(time.Second))))
	if diff := cmp.Diff([]string{"past", "now"}, e.claimIDs("w1", e.base, 10)); diff != "" {
		t.Errorf("Claim (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"future"}, e.claimIDs("w1", e.at(time.Second), 10)); diff != "" {
		t.Errorf("Claim a second later (-want +got):\n%s", diff)
	}
}

func testClaimNotHeld(t *testing.T, e *env) {
	e.enqueue(e.msg("held", withState(store.StateHeld)))
	e.enqueue(e.msg("queued"))
	if diff := cmp.Diff([]string{"queued"}, e.claimIDs("w1", e.base, 10)); diff != "" {
		t.Errorf("Claim (-want +got):\n%s", diff)
	}
	if err := e.s.Release(e.ctx, "held"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"held"}, e.claimIDs("w1", e.base, 10)); diff != "" {
		t.Errorf("Claim after Release (-want +got):\n%s", diff)
	}
}

func testClaimOnlyPending(t *testing.T, e *env) {
	done := e.msg("done")
	done.Rcpts = []store.Recipient{
		{Addr: "<a@example.net>", State: store.RcptDelivered},
		{Addr: "<b@example.net>", State: store.RcptFailed},
	}
	e.enqueue(done)
	e.enqueue(e.msg("open"))
	if diff := cmp.Diff([]string{"open"}, e.claimIDs("w1", e.base, 10)); diff != "" {
		t.Errorf("Claim (-want +got):\n%s", diff)
	}
}

func testClaimOrderAndLimit(t *testing.T, e *env) {
	offsets := map[string]time.Duration{"c": -3 * time.Minute, "a": -time.Minute, "e": -5 * time.Minute, "b": -2 * time.Minute, "d": -4 * time.Minute}
	for id, d := range offsets {
		e.enqueue(e.msg(id, withNext(e.at(d))))
	}
	if got := e.claimIDs("w0", e.base, 0); len(got) != 0 {
		t.Errorf("Claim with limit 0 = %v", got)
	}
	if diff := cmp.Diff([]string{"e", "d", "c"}, e.claimIDs("w1", e.base, 3)); diff != "" {
		t.Errorf("first Claim (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b", "a"}, e.claimIDs("w2", e.base, 3)); diff != "" {
		t.Errorf("second Claim (-want +got):\n%s", diff)
	}
}

func testClaimSkip(t *testing.T, e *env) {
	for _, acc := range []string{"a", "b", "c"} {
		e.enqueue(e.msg("to-"+acc, withAccount(acc+"@example.com")))
	}
	got := e.claimIDs("w1", e.base, 10, "a@example.com", "b@example.com")
	if diff := cmp.Diff([]string{"to-c"}, got); diff != "" {
		t.Errorf("Claim skipping a and b (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"to-a", "to-b"}, sortedIDs(e.claimIDs("w1", e.base, 10))); diff != "" {
		t.Errorf("Claim without skip (-want +got):\n%s", diff)
	}
}

func testClaimedEnvelope(t *testing.T, e *env) {
	m := e.msg("m1", withRcpts("<a@example.net>", "<b@example.net>"))
	e.enqueue(m)
	c := e.claim("w1", e.base, 1, 90*time.Second)
	if len(c) != 1 {
		t.Fatalf("claimed %d messages, want 1", len(c))
	}
	if c[0].Owner != "w1" || !c[0].LeaseUntil.Equal(e.at(90*time.Second)) {
		t.Errorf("lease = %s until %v, want w1 until %v", c[0].Owner, c[0].LeaseUntil, e.at(90*time.Second))
	}
	if diff := envelopeDiff(envelopeOf(m), c[0].Envelope); diff != "" {
		t.Errorf("claimed envelope (-want +got):\n%s", diff)
	}
}

func testClaimExclusive(t *testing.T, e *env) {
	e.enqueueIDs("m1", "m2")
	if got := e.claimIDs("w1", e.base, 10); len(got) != 2 {
		t.Fatalf("w1 claimed %v", got)
	}
	if got := e.claimIDs("w2", e.base, 10); len(got) != 0 {
		t.Errorf("w2 claimed %v, leased by w1", got)
	}
	if got := e.claimIDs("w1", e.base, 10); len(got) != 0 {
		t.Errorf("w1 claimed %v again while its lease runs", got)
	}
}

func testClaimConcurrent(t *testing.T, e *env) {
	const messages, claimers = 200, 8
	var want []string
	for i := range messages {
		id := fmt.Sprintf("m%03d", i)
		want = append(want, id)
		e.enqueue(e.msg(id, withNext(e.at(-time.Duration(i)*time.Second))))
	}
	got := make([][]string, claimers)
	errs := make([]error, claimers)
	var wg sync.WaitGroup
	for w := range claimers {
		wg.Go(func() {
			got[w], errs[w] = claimUntilEmpty(e, fmt.Sprintf("w%d", w))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var all []string
	for w, list := range got {
		for _, id := range list {
			if prev, dup := seen[id]; dup {
				t.Errorf("%s claimed by w%d and w%d", id, prev, w)
			}
			seen[id] = w
			all = append(all, id)
		}
	}
	if diff := cmp.Diff(want, sortedIDs(all)); diff != "" {
		t.Errorf("claimed messages (-want +got):\n%s", diff)
	}
}

func claimUntilEmpty(e *env, owner string) ([]string, error) {
	var got []string
	for {
		c, err := e.s.Claim(e.ctx, owner, e.base, 7, time.Hour, nil)
		if err != nil || len(c) == 0 {
			return got, err
		}
		got = append(got, ids(c)...)
	}
}

func testClaimExpired(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	e.claim("w1", e.base, 1, time.Minute)
	if got := e.claimIDs("w2", e.at(59*time.Second), 1); len(got) != 0 {
		t.Fatalf("w2 claimed %v before w1's lease expired", got)
	}
	c := e.claim("w2", e.at(61*time.Second), 1, time.Minute)
	if len(c) != 1 || c[0].Owner != "w2" {
		t.Fatalf("w2 could not take over the expired lease: %v", ids(c))
	}
	before := e.get("m1")
	err := e.s.Finish(e.ctx, "m1", "w1", store.Result{At: e.at(62 * time.Second), Counted: true, Reply: "250 ok",
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {Addr: "<rcpt@example.net>", State: store.RcptDelivered}}})
	wantErr(t, "Finish by the former owner", err, store.ErrLeaseLost)
	err = e.s.Extend(e.ctx, "m1", "w1", e.at(time.Hour))
	wantErr(t, "Extend by the former owner", err, store.ErrLeaseLost)
	if diff := envelopeDiff(*before, *e.get("m1")); diff != "" {
		t.Errorf("a lost Finish changed the message (-before +after):\n%s", diff)
	}
	e.wantEvents("m1", "accepted : ")
	e.finish("m1", "w2", store.Result{At: e.at(63 * time.Second), Counted: true, Reply: "250 ok",
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {Addr: "<rcpt@example.net>", State: store.RcptDelivered}}})
}

func testExtend(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	e.claim("w1", e.base, 1, time.Minute)
	if err := e.s.Extend(e.ctx, "m1", "w1", e.at(10*time.Minute)); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if got := e.claimIDs("w2", e.at(5*time.Minute), 1); len(got) != 0 {
		t.Errorf("w2 claimed %v within the extended lease", got)
	}
	if got := e.claimIDs("w2", e.at(11*time.Minute), 1); len(got) != 1 {
		t.Errorf("w2 could not claim after the extended lease: %v", got)
	}
	err := e.s.Extend(e.ctx, "m1", "w1", e.at(time.Hour))
	wantErr(t, "Extend of a lease taken over", err, store.ErrLeaseLost)
	err = e.s.Extend(e.ctx, "nope", "w1", e.at(time.Hour))
	if err == nil {
		t.Error("Extend of an unknown message succeeded")
	}
}

func testReleaseLeases(t *testing.T, e *env) {
	e.enqueue(e.msg("a1", withNext(e.at(-3*time.Minute))))
	e.enqueue(e.msg("a2", withNext(e.at(-2*time.Minute))))
	e.enqueue(e.msg("b1", withNext(e.at(-time.Minute))))
	e.claim("A", e.base, 2, time.Hour)
	e.claim("B", e.base, 1, time.Hour)
	if err := e.s.ReleaseLeases(e.ctx, "A"); err != nil {
		t.Fatalf("ReleaseLeases: %v", err)
	}
	if diff := cmp.Diff([]string{"a1", "a2"}, e.claimIDs("C", e.base, 10)); diff != "" {
		t.Errorf("Claim after A released its leases (-want +got):\n%s", diff)
	}
	err := e.s.Finish(e.ctx, "a1", "A", store.Result{At: e.base, Counted: true})
	wantErr(t, "Finish after ReleaseLeases", err, store.ErrLeaseLost)
}

// withLease enqueues the message already leased to owner until until.
func withLease(owner string, until time.Time) msgOpt {
	return func(m *store.NewMessage) { m.LeaseOwner, m.LeaseUntil = owner, until }
}

// A message enqueued with a lease is its owner's as if claimed: nobody
// else claims it, and the owner extends and finishes it.
func testEnqueuedLeased(t *testing.T, e *env) {
	e.enqueue(e.msg("m1", withLease("w1", e.at(time.Minute))), e.msg("m2"))
	if diff := cmp.Diff([]string{"m2"}, e.claimIDs("w2", e.base, 10)); diff != "" {
		t.Errorf("Claim beside a leased message (-want +got):\n%s", diff)
	}
	if got := e.get("m1"); got.State != store.StateQueued || got.Attempts != 0 {
		t.Errorf("the leased message is %s with %d attempts, want queued with none", got.State, got.Attempts)
	}
	if err := e.s.Extend(e.ctx, "m1", "w1", e.at(time.Hour)); err != nil {
		t.Fatalf("Extend by the owner: %v", err)
	}
	if got := e.claimIDs("w2", e.at(30*time.Minute), 10); slices.Contains(got, "m1") {
		t.Errorf("Claim within the extended lease: %v", got)
	}
	e.finish("m1", "w1", store.Result{At: e.at(time.Second), Counted: true, Reply: "250 ok",
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {Addr: "<rcpt@example.net>", State: store.RcptDelivered, LastReply: "250 ok"}}})
	e.wantGone("m1")
	e.wantHistoryState("m1", store.StateDelivered)
	e.wantEvents("m1", "accepted : ", "delivered <rcpt@example.net>: 250 ok")
}

// When the owner of a message enqueued with a lease dies before it
// finishes, the lease runs out and another instance delivers it.
func testEnqueuedLeasedOwnerDies(t *testing.T, e *env) {
	e.enqueue(e.msg("m1", withLease("w1", e.at(time.Minute))))
	if got := e.claimIDs("w2", e.at(59*time.Second), 10); len(got) != 0 {
		t.Fatalf("claimed %v before the lease ran out", got)
	}
	c := e.claim("w2", e.at(61*time.Second), 10, time.Minute)
	if len(c) != 1 || c[0].ID != "m1" || c[0].Owner != "w2" {
		t.Fatalf("after the lease ran out, w2 claimed %v", ids(c))
	}
	if diff := cmp.Diff(bodyOf("m1"), e.body("m1")); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	err := e.s.Finish(e.ctx, "m1", "w1", store.Result{At: e.at(62 * time.Second), Counted: true})
	wantErr(t, "Finish by the dead owner", err, store.ErrLeaseLost)
}
