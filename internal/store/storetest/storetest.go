// Package storetest is the conformance suite every store engine runs from
// its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openEmpty(t) })
//	}
//
// The suite is the executable form of the doc comments of store.Store,
// plus what they leave to judgement and every engine must answer alike:
//
//   - the messages of one Enqueue are stored all or none; an existing ID,
//     an empty reverse-path, no recipients or a body that fails to read
//     refuse the call (the reader's error is wrapped);
//   - List is in ID order (IDs grow with time: arrival order), paged
//     with After and Limit;
//   - Hold and Release of a message already in that state change nothing
//     and add no event; Retry does not lift a hold; a message held during
//     an attempt stays held after Finish;
//   - a lease that expired but was not taken over is still its owner's;
//     the empty owner holds no lease;
//   - Finish adds one event per recipient it reports on (delivered,
//     bounced or attempt, with the recipient's reply) in envelope order,
//     or one attempt event with the overall reply when it reports on
//     none; an attempt that did not count adds a deferred event first;
//     naming a recipient the message lacks is refused and changes nothing;
//   - events come back ordered by time, equal times in write order;
//   - times keep at least microsecond precision;
//   - Search matches substrings literally ('%' and '_' are no wildcards),
//     a recipient substring within one recipient, case-insensitively;
//     pages with Before neither repeat nor skip a record; a Before that
//     names no record is ErrNotFound; a search whose context ends returns
//     the context's error at once, however much history is left to
//     read, and the next search and write succeed.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Run runs the suite. open returns a new, empty store for one subtest and
// closes it when the subtest ends (t.Cleanup); the suite may close it
// first, so Close must be safe to call twice.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	groups := []struct {
		name  string
		tests []test
	}{
		{"Enqueue", enqueueTests},
		{"Claim", claimTests},
		{"Finish", finishTests},
		{"Operator", operatorTests},
		{"History", historyTests},
		{"Search", searchTests},
		{"Prune", pruneTests},
		{"Stats", statsTests},
		{"Lifecycle", lifecycleTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newEnv(t, open(t)))
				})
			}
		})
	}
}

type test struct {
	name string
	run  func(t *testing.T, e *env)
}

// env is one subtest's store and a base time: times in the suite are
// relative to base, which is now, to the millisecond.
type env struct {
	t    *testing.T
	s    store.Store
	ctx  context.Context
	base time.Time
}

func newEnv(t *testing.T, s store.Store) *env {
	return &env{t: t, s: s, ctx: t.Context(), base: time.Now().UTC().Truncate(time.Millisecond)}
}

// at is base moved by d.
func (e *env) at(d time.Duration) time.Time { return e.base.Add(d) }

// msgOpt adjusts a message built by msg.
type msgOpt func(*store.NewMessage)

func withAccount(a string) msgOpt { return func(m *store.NewMessage) { m.Account = a } }
func withNext(t time.Time) msgOpt { return func(m *store.NewMessage) { m.NextAttempt = t } }
func withState(s string) msgOpt   { return func(m *store.NewMessage) { m.State = s } }
func withReceived(t time.Time) msgOpt {
	return func(m *store.NewMessage) { m.Received = t }
}
func withBody(b []byte) msgOpt {
	return func(m *store.NewMessage) { m.Body, m.Size = bytes.NewReader(b), int64(len(b)) }
}

// withRcpts sets pending recipients with these addresses.
func withRcpts(addrs ...string) msgOpt {
	return func(m *store.NewMessage) {
		m.Rcpts = nil
		for _, a := range addrs {
			m.Rcpts = append(m.Rcpts, store.Recipient{Addr: a, State: store.RcptPending})
		}
	}
}

// msg builds a due message with one pending recipient and the body
// bodyOf(id).
func (e *env) msg(id string, opts ...msgOpt) *store.NewMessage {
	m := &store.NewMessage{Envelope: store.Envelope{
		ID: id, Account: "sender@example.com", Listener: "printers", Client: "10.0.0.7",
		From:       "<sender@example.com>",
		MailParams: []string{"BODY=8BITMIME"},
		Rcpts:      []store.Recipient{{Addr: "<rcpt@example.net>", State: store.RcptPending}},
		HeaderID:   "<" + id + "@client.example>",
		Received:   e.at(-time.Minute), Expires: e.at(5 * 24 * time.Hour),
		NextAttempt: e.at(-time.Minute), State: store.StateQueued,
	}}
	withBody(bodyOf(id))(m)
	for _, o := range opts {
		o(m)
	}
	return m
}

func bodyOf(id string) []byte {
	return []byte("Subject: " + id + "\r\n\r\nHello from " + id + ".\r\n")
}

func (e *env) enqueue(msgs ...*store.NewMessage) {
	e.t.Helper()
	if err := e.s.Enqueue(e.ctx, msgs...); err != nil {
		e.t.Fatalf("Enqueue: %v", err)
	}
}

// enqueueIDs enqueues one default message per ID, each in its own call.
func (e *env) enqueueIDs(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		e.enqueue(e.msg(id))
	}
}

func (e *env) get(id string) *store.Envelope {
	e.t.Helper()
	env, err := e.s.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return env
}

func (e *env) body(id string) []byte {
	e.t.Helper()
	b, err := ReadBody(e.ctx, e.s, id)
	if err != nil {
		e.t.Fatalf("Body(%s): %v", id, err)
	}
	return b
}

// ReadBody reads a queued message's body whole.
func ReadBody(ctx context.Context, s store.Store, id string) ([]byte, error) {
	rc, err := s.Body(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (e *env) claim(owner string, now time.Time, limit int, lease time.Duration, skip ...string) []*store.Claimed {
	e.t.Helper()
	c, err := e.s.Claim(e.ctx, owner, now, limit, lease, skip)
	if err != nil {
		e.t.Fatalf("Claim(%s): %v", owner, err)
	}
	return c
}

// claimIDs claims and returns the IDs, in the order Claim returned them.
func (e *env) claimIDs(owner string, now time.Time, limit int, skip ...string) []string {
	e.t.Helper()
	return ids(e.claim(owner, now, limit, time.Minute, skip...))
}

func ids(claimed []*store.Claimed) []string {
	out := []string{}
	for _, c := range claimed {
		out = append(out, c.ID)
	}
	return out
}

func (e *env) finish(id, owner string, res store.Result) {
	e.t.Helper()
	if err := e.s.Finish(e.ctx, id, owner, res); err != nil {
		e.t.Fatalf("Finish(%s, %s): %v", id, owner, err)
	}
}

func (e *env) history(id string) (*store.Record, []*store.Event) {
	e.t.Helper()
	rec, events, err := e.s.History(e.ctx, id)
	if err != nil {
		e.t.Fatalf("History(%s): %v", id, err)
	}
	return rec, events
}

// eventKinds lists events as "type rcpt: reply" lines, for comparison.
func eventKinds(events []*store.Event) []string {
	out := []string{}
	for _, ev := range events {
		out = append(out, fmt.Sprintf("%s %s: %s", ev.Type, ev.Rcpt, ev.Reply))
	}
	return out
}

func (e *env) wantEvents(id string, want ...string) {
	e.t.Helper()
	_, events := e.history(id)
	if diff := cmp.Diff(want, eventKinds(events), cmpopts.EquateEmpty()); diff != "" {
		e.t.Errorf("events of %s (-want +got):\n%s", id, diff)
	}
}

func (e *env) wantHistoryState(id, state string) *store.Record {
	e.t.Helper()
	rec, _ := e.history(id)
	if rec.State != state {
		e.t.Errorf("history state of %s = %q, want %q", id, rec.State, state)
	}
	return rec
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
	}
}

// wantGone checks that id is out of the queue: no envelope, no body, not
// listed.
func (e *env) wantGone(id string) {
	e.t.Helper()
	_, err := e.s.Get(e.ctx, id)
	wantErr(e.t, "Get "+id, err, store.ErrNotFound)
	_, err = e.s.Body(e.ctx, id)
	wantErr(e.t, "Body "+id, err, store.ErrNotFound)
	list, err := e.s.List(e.ctx, store.Filter{})
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	for _, env := range list {
		if env.ID == id {
			e.t.Errorf("List still has %s", id)
		}
	}
}

func (e *env) listIDs(f store.Filter) []string {
	e.t.Helper()
	list, err := e.s.List(e.ctx, f)
	if err != nil {
		e.t.Fatalf("List(%+v): %v", f, err)
	}
	out := []string{}
	for _, env := range list {
		out = append(out, env.ID)
	}
	return out
}

// envelopeOf is what Get should return for a message enqueued as m.
func envelopeOf(m *store.NewMessage) store.Envelope {
	env := m.Envelope
	env.Rcpts = slices.Clone(env.Rcpts)
	for i := range env.Rcpts {
		if env.Rcpts[i].State == "" {
			env.Rcpts[i].State = store.RcptPending
		}
	}
	return env
}

// envelopeDiff compares envelopes: times by instant, empty lists alike.
func envelopeDiff(want, got store.Envelope) string {
	return cmp.Diff(want, got, cmpopts.EquateEmpty())
}
