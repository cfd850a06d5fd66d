package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

var finishTests = []test{
	{"PartialDelivery", testFinishPartial},
	{"AllDelivered", testFinishDelivered},
	{"Bounced", testFinishBounced},
	{"CompletedOverTwoAttempts", testFinishTwoAttempts},
	{"WithoutLease", testFinishWithoutLease},
	{"NotCounted", testFinishNotCounted},
	{"HeldDuringAttempt", testFinishHeld},
	{"DeletedDuringAttempt", testFinishDeleted},
	{"UnknownRecipient", testFinishUnknownRecipient},
}

const (
	rcptA = "<a@example.net>"
	rcptB = "<b@example.net>"
	rcptC = "<c@example.net>"
)

func rcptResult(state, reply string) store.Recipient {
	return store.Recipient{State: state, LastReply: reply}
}

// claimOne enqueues a message with the recipients A, B and C and claims
// it for owner.
func (e *env) claimOne(id, owner string) {
	e.t.Helper()
	e.enqueue(e.msg(id, withRcpts(rcptA, rcptB, rcptC)))
	if c := e.claim(owner, e.base, 1, time.Hour); len(c) != 1 || c[0].ID != id {
		e.t.Fatalf("could not claim %s: %v", id, ids(c))
	}
}

func (e *env) rcptStates(id string) []string {
	e.t.Helper()
	var out []string
	for _, r := range e.get(id).Rcpts {
		out = append(out, r.Addr+" "+r.State+" "+r.LastReply)
	}
	return out
}

func testFinishPartial(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	e.finish("m1", "w1", store.Result{
		At: e.at(time.Second), Counted: true, Reply: "451 4.3.0 some recipients deferred",
		NextAttempt: e.at(5 * time.Minute),
		Rcpts: map[string]store.Recipient{
			rcptA: rcptResult(store.RcptDelivered, "250 2.1.5 OK"),
			rcptB: rcptResult(store.RcptPending, "452 4.2.2 mailbox full"),
		},
	})
	env := e.get("m1")
	if env.State != store.StateQueued || env.Attempts != 1 || env.LastReply != "451 4.3.0 some recipients deferred" ||
		!env.NextAttempt.Equal(e.at(5*time.Minute)) {
		t.Errorf("after a partial delivery: state %s, attempts %d, last reply %q, next attempt %v",
			env.State, env.Attempts, env.LastReply, env.NextAttempt)
	}
	want := []string{rcptA + " delivered 250 2.1.5 OK", rcptB + " pending 452 4.2.2 mailbox full", rcptC + " pending "}
	if diff := cmp.Diff(want, e.rcptStates("m1")); diff != "" {
		t.Errorf("recipients (-want +got):\n%s", diff)
	}
	if !bytes.Equal(e.body("m1"), bodyOf("m1")) {
		t.Error("body changed after a partial delivery")
	}
	e.wantHistoryState("m1", store.StateQueued)
	e.wantEvents("m1", "accepted : ", "delivered "+rcptA+": 250 2.1.5 OK", "attempt "+rcptB+": 452 4.2.2 mailbox full")
	// The lease is released: the next attempt is anyone's, at its time.
	if got := e.claimIDs("w2", e.at(4*time.Minute), 1); len(got) != 0 {
		t.Errorf("claimed %v before its next attempt", got)
	}
	if got := e.claimIDs("w2", e.at(5*time.Minute), 1); len(got) != 1 {
		t.Errorf("not claimable at its next attempt: %v", got)
	}
}

func testFinishDelivered(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	at := e.at(2 * time.Second)
	e.finish("m1", "w1", store.Result{At: at, Counted: true, Reply: "250 2.0.0 OK", Rcpts: map[string]store.Recipient{
		rcptA: rcptResult(store.RcptDelivered, "250 2.1.5 A"),
		rcptB: rcptResult(store.RcptDelivered, "250 2.1.5 B"),
		rcptC: rcptResult(store.RcptDelivered, "250 2.1.5 C"),
	}})
	e.wantGone("m1")
	rec := e.wantHistoryState("m1", store.StateDelivered)
	if !rec.Updated.Equal(at) {
		t.Errorf("history updated %v, want the attempt's time %v", rec.Updated, at)
	}
	e.wantEvents("m1", "accepted : ", "delivered "+rcptA+": 250 2.1.5 A",
		"delivered "+rcptB+": 250 2.1.5 B", "delivered "+rcptC+": 250 2.1.5 C")
	if got := e.claimIDs("w2", e.at(time.Hour), 10); len(got) != 0 {
		t.Errorf("a delivered message was claimed: %v", got)
	}
}

func testFinishBounced(t *testing.T, e *env) {
	e.claimOne("mixed", "w1")
	e.finish("mixed", "w1", store.Result{At: e.at(time.Second), Counted: true, Rcpts: map[string]store.Recipient{
		rcptA: rcptResult(store.RcptDelivered, "250 OK"),
		rcptB: rcptResult(store.RcptFailed, "550 5.1.1 no such user"),
		rcptC: rcptResult(store.RcptDelivered, "250 OK"),
	}})
	e.wantGone("mixed")
	e.wantHistoryState("mixed", store.StateBounced)

	e.claimOne("failed", "w1")
	e.finish("failed", "w1", store.Result{At: e.at(time.Second), Counted: true, Rcpts: map[string]store.Recipient{
		rcptA: rcptResult(store.RcptFailed, "550 5.1.1 A"),
		rcptB: rcptResult(store.RcptFailed, "550 5.1.1 B"),
		rcptC: rcptResult(store.RcptFailed, "550 5.1.1 C"),
	}})
	e.wantGone("failed")
	e.wantHistoryState("failed", store.StateBounced)
	e.wantEvents("failed", "accepted : ", "bounced "+rcptA+": 550 5.1.1 A",
		"bounced "+rcptB+": 550 5.1.1 B", "bounced "+rcptC+": 550 5.1.1 C")
}

func testFinishTwoAttempts(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	e.finish("m1", "w1", store.Result{At: e.at(time.Second), Counted: true, NextAttempt: e.at(time.Minute),
		Rcpts: map[string]store.Recipient{rcptA: rcptResult(store.RcptDelivered, "250 A")}})
	c := e.claim("w2", e.at(time.Minute), 1, time.Hour)
	if len(c) != 1 {
		t.Fatalf("claimed %v at the next attempt", ids(c))
	}
	var pending []string
	for _, r := range c[0].Rcpts {
		if r.State == store.RcptPending {
			pending = append(pending, r.Addr)
		}
	}
	if diff := cmp.Diff([]string{rcptB, rcptC}, pending); diff != "" {
		t.Errorf("pending recipients at the second attempt (-want +got):\n%s", diff)
	}
	e.finish("m1", "w2", store.Result{At: e.at(61 * time.Second), Counted: true, Rcpts: map[string]store.Recipient{
		rcptB: rcptResult(store.RcptDelivered, "250 B"),
		rcptC: rcptResult(store.RcptDelivered, "250 C"),
	}})
	e.wantGone("m1")
	e.wantHistoryState("m1", store.StateDelivered)
}

func testFinishWithoutLease(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"))
	before := e.get("m1")
	res := store.Result{At: e.base, Counted: true, Reply: "250 OK",
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": rcptResult(store.RcptDelivered, "250 OK")}}
	err := e.s.Finish(e.ctx, "m1", "w1", res)
	wantErr(t, "Finish of a message never claimed", err, store.ErrLeaseLost)
	// An unleased message has no owner; "" is no one's lease either.
	wantErr(t, "Finish without an owner", e.s.Finish(e.ctx, "m1", "", res), store.ErrLeaseLost)
	wantErr(t, "Extend without an owner", e.s.Extend(e.ctx, "m1", "", e.at(time.Hour)), store.ErrLeaseLost)
	if diff := envelopeDiff(*before, *e.get("m1")); diff != "" {
		t.Errorf("a refused Finish changed the message (-before +after):\n%s", diff)
	}
	e.claim("w1", e.base, 1, time.Hour)
	e.finish("m1", "w1", store.Result{At: e.base, Counted: true, NextAttempt: e.at(time.Minute), Reply: "421 busy"})
	err = e.s.Finish(e.ctx, "m1", "w1", res)
	wantErr(t, "a second Finish of one lease", err, store.ErrLeaseLost)
	if env := e.get("m1"); env.Attempts != 1 || env.LastReply != "421 busy" {
		t.Errorf("after a refused second Finish: attempts %d, last reply %q", env.Attempts, env.LastReply)
	}
	err = e.s.Finish(e.ctx, "nope", "w1", res)
	wantErr(t, "Finish of an unknown message", err, store.ErrLeaseLost)
}

func testFinishNotCounted(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	e.finish("m1", "w1", store.Result{At: e.at(time.Second), Counted: false,
		Reply: "account rate limit reached", NextAttempt: e.at(30 * time.Second)})
	env := e.get("m1")
	if env.Attempts != 0 || !env.NextAttempt.Equal(e.at(30*time.Second)) {
		t.Errorf("after an attempt that did not count: attempts %d, next attempt %v", env.Attempts, env.NextAttempt)
	}
	e.wantEvents("m1", "accepted : ", "deferred : account rate limit reached")
	e.claim("w1", e.at(30*time.Second), 1, time.Hour)
	e.finish("m1", "w1", store.Result{At: e.at(31 * time.Second), Counted: true,
		Reply: "421 4.3.2 connection dropped", NextAttempt: e.at(time.Hour)})
	if env := e.get("m1"); env.Attempts != 1 {
		t.Errorf("attempts = %d after one counted attempt", env.Attempts)
	}
	e.wantEvents("m1", "accepted : ", "deferred : account rate limit reached", "attempt : 421 4.3.2 connection dropped")
}

func testFinishHeld(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	if err := e.s.Hold(e.ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	e.finish("m1", "w1", store.Result{At: e.at(time.Second), Counted: true, NextAttempt: e.at(time.Minute),
		Rcpts: map[string]store.Recipient{rcptA: rcptResult(store.RcptDelivered, "250 A")}})
	if st := e.get("m1").State; st != store.StateHeld {
		t.Errorf("state after an attempt on a message held meanwhile = %s, want held", st)
	}
	if got := e.claimIDs("w1", e.at(time.Hour), 1); len(got) != 0 {
		t.Errorf("a held message was claimed: %v", got)
	}
	if err := e.s.Release(e.ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if got := e.claimIDs("w1", e.at(time.Hour), 1); len(got) != 1 {
		t.Errorf("a released message was not claimed: %v", got)
	}
}

func testFinishDeleted(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	if err := e.s.Delete(e.ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	err := e.s.Finish(e.ctx, "m1", "w1", store.Result{At: e.at(time.Second), Counted: true,
		Rcpts: map[string]store.Recipient{rcptA: rcptResult(store.RcptDelivered, "250 A")}})
	wantErr(t, "Finish of a message deleted during the attempt", err, store.ErrLeaseLost)
	e.wantGone("m1")
	e.wantHistoryState("m1", store.StateDeleted)
}

func testFinishUnknownRecipient(t *testing.T, e *env) {
	e.claimOne("m1", "w1")
	before := e.get("m1")
	err := e.s.Finish(e.ctx, "m1", "w1", store.Result{At: e.at(time.Second), Counted: true, Rcpts: map[string]store.Recipient{
		rcptA:               rcptResult(store.RcptDelivered, "250 A"),
		"<x@elsewhere.net>": rcptResult(store.RcptDelivered, "250 X"),
	}})
	if err == nil {
		t.Fatal("Finish with a recipient the message does not have succeeded")
	}
	if diff := envelopeDiff(*before, *e.get("m1")); diff != "" {
		t.Errorf("a refused Finish changed the message (-before +after):\n%s", diff)
	}
	// The lease is still w1's.
	e.finish("m1", "w1", store.Result{At: e.at(time.Second), Counted: true, NextAttempt: e.at(time.Minute),
		Rcpts: map[string]store.Recipient{rcptA: rcptResult(store.RcptDelivered, "250 A")}})
}
