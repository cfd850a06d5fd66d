package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

var operatorTests = []test{
	{"UnknownID", testOperatorUnknown},
	{"List", testList},
	{"HoldAndRelease", testHoldRelease},
	{"Retry", testRetry},
	{"RetryDuringAnAttempt", testRetryDuringAnAttempt},
	{"Delete", testDelete},
}

func testOperatorUnknown(t *testing.T, e *env) {
	_, err := e.s.Get(e.ctx, "nope")
	wantErr(t, "Get", err, store.ErrNotFound)
	_, err = e.s.Body(e.ctx, "nope")
	wantErr(t, "Body", err, store.ErrNotFound)
	wantErr(t, "Hold", e.s.Hold(e.ctx, "nope"), store.ErrNotFound)
	wantErr(t, "Release", e.s.Release(e.ctx, "nope"), store.ErrNotFound)
	wantErr(t, "Retry", e.s.Retry(e.ctx, "nope", e.base), store.ErrNotFound)
	wantErr(t, "Delete", e.s.Delete(e.ctx, "nope"), store.ErrNotFound)
	_, _, err = e.s.History(e.ctx, "nope")
	wantErr(t, "History", err, store.ErrNotFound)
}

func testList(t *testing.T, e *env) {
	add := func(id, account, state string, age time.Duration) {
		e.enqueue(e.msg(id, withAccount(account), withState(state), withReceived(e.at(-age))))
	}
	// Queue IDs grow with time: List's ID order is arrival order.
	add("1-q-a-old", "a@example.com", store.StateQueued, 5*time.Hour)
	add("2-h-a", "a@example.com", store.StateHeld, 4*time.Hour)
	add("3-q-b", "b@example.com", store.StateQueued, 3*time.Hour)
	add("4-q-a-new", "a@example.com", store.StateQueued, 2*time.Hour)
	add("5-h-b", "b@example.com", store.StateHeld, time.Hour)
	cases := []struct {
		filter store.Filter
		want   []string
	}{
		{store.Filter{}, []string{"1-q-a-old", "2-h-a", "3-q-b", "4-q-a-new", "5-h-b"}},
		{store.Filter{State: store.StateQueued}, []string{"1-q-a-old", "3-q-b", "4-q-a-new"}},
		{store.Filter{State: store.StateHeld}, []string{"2-h-a", "5-h-b"}},
		{store.Filter{Account: "a@example.com"}, []string{"1-q-a-old", "2-h-a", "4-q-a-new"}},
		{store.Filter{State: store.StateHeld, Account: "b@example.com"}, []string{"5-h-b"}},
		{store.Filter{Account: "nobody@example.com"}, []string{}},
		{store.Filter{Limit: 2}, []string{"1-q-a-old", "2-h-a"}},
		{store.Filter{State: store.StateQueued, Limit: 1}, []string{"1-q-a-old"}},
		// Pages: After the last ID of the page before.
		{store.Filter{After: "2-h-a", Limit: 2}, []string{"3-q-b", "4-q-a-new"}},
		{store.Filter{After: "4-q-a-new", Limit: 2}, []string{"5-h-b"}},
		{store.Filter{After: "5-h-b", Limit: 2}, []string{}},
		{store.Filter{State: store.StateQueued, After: "1-q-a-old"}, []string{"3-q-b", "4-q-a-new"}},
		{store.Filter{After: "0-gone"}, []string{"1-q-a-old", "2-h-a", "3-q-b", "4-q-a-new", "5-h-b"}},
	}
	for _, tc := range cases {
		if diff := cmp.Diff(tc.want, e.listIDs(tc.filter)); diff != "" {
			t.Errorf("List(%+v) (-want +got):\n%s", tc.filter, diff)
		}
	}
	got, err := e.s.List(e.ctx, store.Filter{Account: "b@example.com", State: store.StateQueued})
	if err != nil || len(got) != 1 {
		t.Fatalf("List: %v, %d messages", err, len(got))
	}
	if got[0].Account != "b@example.com" || got[0].ID != "3-q-b" || len(got[0].Rcpts) != 1 {
		t.Errorf("listed envelope incomplete: %+v", got[0])
	}
}

func testHoldRelease(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	if err := e.s.Hold(e.ctx, "m1"); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	if err := e.s.Hold(e.ctx, "m1"); err != nil {
		t.Fatalf("Hold of a held message: %v", err)
	}
	if st := e.get("m1").State; st != store.StateHeld {
		t.Errorf("state after Hold = %s", st)
	}
	if got := e.claimIDs("w1", e.at(time.Hour), 10); len(got) != 0 {
		t.Errorf("a held message was claimed: %v", got)
	}
	e.wantHistoryState("m1", store.StateHeld)
	if err := e.s.Release(e.ctx, "m1"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := e.s.Release(e.ctx, "m1"); err != nil {
		t.Fatalf("Release of a queued message: %v", err)
	}
	if st := e.get("m1").State; st != store.StateQueued {
		t.Errorf("state after Release = %s", st)
	}
	e.wantHistoryState("m1", store.StateQueued)
	e.wantEvents("m1", "accepted : ", "held : ", "released : ")
	if got := e.claimIDs("w1", e.base, 10); len(got) != 1 {
		t.Errorf("a released message was not claimed: %v", got)
	}
}

func testRetry(t *testing.T, e *env) {
	e.enqueue(e.msg("m1", withNext(e.at(time.Hour))))
	if got := e.claimIDs("w1", e.base, 10); len(got) != 0 {
		t.Fatalf("claimed %v before its next attempt", got)
	}
	if err := e.s.Retry(e.ctx, "m1", e.base); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if next := e.get("m1").NextAttempt; !next.Equal(e.base) {
		t.Errorf("next attempt after Retry = %v, want %v", next, e.base)
	}
	e.wantEvents("m1", "accepted : ", "retry : ")
	if got := e.claimIDs("w1", e.base, 10); len(got) != 1 {
		t.Errorf("not claimable after Retry: %v", got)
	}
	// Retry does not lift a hold.
	e.enqueue(e.msg("held", withState(store.StateHeld), withNext(e.at(time.Hour))))
	if err := e.s.Retry(e.ctx, "held", e.base); err != nil {
		t.Fatalf("Retry of a held message: %v", err)
	}
	if env := e.get("held"); env.State != store.StateHeld {
		t.Errorf("Retry released a held message (state %s)", env.State)
	}
	if got := e.claimIDs("w1", e.base, 10); len(got) != 0 {
		t.Errorf("claimed %v: a held message after Retry", got)
	}
}

// An operator's Retry while an attempt runs is not undone by that
// attempt's Finish: the message stays due. A Retry before a claim is
// spent by the attempt it brought forward.
func testRetryDuringAnAttempt(t *testing.T, e *env) {
	rcpt := "<rcpt@example.net>"
	deferred := store.Result{At: e.at(time.Second), Counted: true, Reply: "451 later",
		NextAttempt: e.at(time.Hour), Rcpts: map[string]store.Recipient{rcpt: {Addr: rcpt, State: store.RcptPending, LastReply: "451 later"}}}
	e.enqueue(e.msg("m1"))
	e.claim("w1", e.base, 1, time.Minute)
	if err := e.s.Retry(e.ctx, "m1", e.at(500*time.Millisecond)); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	e.finish("m1", "w1", deferred)
	if next := e.get("m1").NextAttempt; !next.Equal(e.at(500 * time.Millisecond)) {
		t.Errorf("after a Retry during the attempt, the next attempt is %v, want the Retry's time %v", next.Sub(e.base), 500*time.Millisecond)
	}
	// The owner taking its own expired lease back (its attempt still
	// running) keeps a Retry made during the attempt.
	e.claim("w1", e.at(2*time.Second), 1, time.Minute)
	if err := e.s.Retry(e.ctx, "m1", e.at(3*time.Second)); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	e.claim("w1", e.at(2*time.Minute), 1, time.Minute)
	deferred.At, deferred.NextAttempt = e.at(2*time.Minute), e.at(3*time.Hour)
	e.finish("m1", "w1", deferred)
	if next := e.get("m1").NextAttempt; !next.Equal(e.at(3 * time.Second)) {
		t.Errorf("after the owner re-claimed its expired lease, the next attempt is %v, want the Retry's %v", next.Sub(e.base), 3*time.Second)
	}
	// The next attempt spends the Retry: its deferral holds.
	e.claim("w1", e.at(4*time.Second), 1, time.Minute)
	deferred.At, deferred.NextAttempt = e.at(5*time.Second), e.at(2*time.Hour)
	e.finish("m1", "w1", deferred)
	if next := e.get("m1").NextAttempt; !next.Equal(e.at(2 * time.Hour)) {
		t.Errorf("after an attempt with no Retry during it, the next attempt is %v, want %v", next.Sub(e.base), 2*time.Hour)
	}
}

func testDelete(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"), e.msg("m2"))
	if err := e.s.Delete(e.ctx, "m1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	e.wantGone("m1")
	e.wantHistoryState("m1", store.StateDeleted)
	e.wantEvents("m1", "accepted : ", "deleted : ")
	wantErr(t, "Delete again", e.s.Delete(e.ctx, "m1"), store.ErrNotFound)
	if got := e.claimIDs("w1", e.base, 10); len(got) != 1 || got[0] != "m2" {
		t.Errorf("Claim after Delete = %v, want [m2]", got)
	}
	if string(e.body("m2")) != string(bodyOf("m2")) {
		t.Error("Delete changed another message's body")
	}
}
