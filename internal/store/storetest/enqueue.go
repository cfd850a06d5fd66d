package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

var enqueueTests = []test{
	{"BodyRoundTrip", testBodyRoundTrip},
	{"EnvelopeRoundTrip", testEnvelopeRoundTrip},
	{"SeveralInOneCall", testEnqueueSeveral},
	{"Concurrent", testEnqueueConcurrent},
	{"DuplicateID", testEnqueueDuplicate},
	{"BodyReadError", testEnqueueBodyError},
	{"Invalid", testEnqueueInvalid},
	{"History", testEnqueueHistory},
}

// binaryBody returns n bytes of every value, NUL, CR and LF included,
// with bare CRs, bare LFs and CRLFs.
func binaryBody(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, "\x00\r\n\r\x00\n\r\n.\r\n\x00")
	return b
}

func testBodyRoundTrip(t *testing.T, e *env) {
	cases := []struct {
		name string
		body []byte
	}{
		{"small", []byte("Subject: hi\r\n\r\nhello\r\n")},
		{"empty", []byte{}},
		{"binary", binaryBody(70_000, 1)},
		{"one byte", []byte{0}},
		{"20 MiB", binaryBody(20<<20, 2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := e.msg("body-"+tc.name, withBody(tc.body))
			e.enqueue(m)
			got := e.body(m.ID)
			if len(got) != len(tc.body) || sha256.Sum256(got) != sha256.Sum256(tc.body) {
				t.Fatalf("Body returned %d bytes that differ from the %d enqueued", len(got), len(tc.body))
			}
			if env := e.get(m.ID); env.Size != int64(len(tc.body)) {
				t.Errorf("Size = %d, want %d", env.Size, len(tc.body))
			}
		})
	}
}

func testEnvelopeRoundTrip(t *testing.T, e *env) {
	m := e.msg("full")
	m.MailParams = []string{"BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=QQ314159"}
	m.Rcpts = []store.Recipient{
		{Addr: "<a@example.net>", State: store.RcptPending, Notify: "SUCCESS,FAILURE", ORcpt: "rfc822;a@example.net"},
		{Addr: `<"odd name"@example.net>`, State: store.RcptDelivered, LastReply: "250 2.0.0 OK"},
		{Addr: "<c@example.net>", State: store.RcptFailed, LastReply: "550 5.1.1 unknown"},
	}
	m.Attempts, m.LastReply, m.Bounce = 2, "451 4.7.0 try later", true
	m.Received = e.at(-time.Hour).Add(123 * time.Microsecond)
	m.Expires = e.at(96 * time.Hour)
	m.NextAttempt = e.at(10 * time.Minute)
	e.enqueue(m)
	if diff := envelopeDiff(envelopeOf(m), *e.get("full")); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	held := e.msg("held", withState(store.StateHeld))
	e.enqueue(held)
	if got := e.get("held").State; got != store.StateHeld {
		t.Errorf("state of a message enqueued held = %q", got)
	}
}

func testEnqueueSeveral(t *testing.T, e *env) {
	e.enqueue(e.msg("m1"), e.msg("m2"), e.msg("m3"))
	if diff := cmp.Diff([]string{"m1", "m2", "m3"}, sortedIDs(e.listIDs(store.Filter{}))); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	for _, id := range []string{"m1", "m2", "m3"} {
		if !bytes.Equal(e.body(id), bodyOf(id)) {
			t.Errorf("body of %s differs", id)
		}
	}
}

func testEnqueueConcurrent(t *testing.T, e *env) {
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("c%02d", i)
		wg.Go(func() {
			errs[i] = e.s.Enqueue(e.ctx, e.msg(want[i]))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Enqueue: %v", err)
	}
	if diff := cmp.Diff(want, sortedIDs(e.listIDs(store.Filter{}))); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	for _, id := range want {
		if !bytes.Equal(e.body(id), bodyOf(id)) {
			t.Errorf("body of %s differs", id)
		}
	}
}

func testEnqueueDuplicate(t *testing.T, e *env) {
	e.enqueue(e.msg("dup"))
	if err := e.s.Enqueue(e.ctx, e.msg("dup", withBody([]byte("other")))); err == nil {
		t.Fatal("Enqueue of an existing ID succeeded")
	}
	if !bytes.Equal(e.body("dup"), bodyOf("dup")) {
		t.Error("the first message's body changed")
	}
	// The messages of one call are stored all or none.
	if err := e.s.Enqueue(e.ctx, e.msg("fresh"), e.msg("dup")); err == nil {
		t.Fatal("Enqueue of a batch with an existing ID succeeded")
	}
	_, err := e.s.Get(e.ctx, "fresh")
	wantErr(t, "Get of a message from a failed call", err, store.ErrNotFound)
}

// FailingReader gives Left zero bytes, then Err: a body that cannot be
// read to its end.
type FailingReader struct {
	Left int
	Err  error
}

func (r *FailingReader) Read(p []byte) (int, error) {
	if r.Left == 0 {
		return 0, r.Err
	}
	n := min(len(p), r.Left)
	clear(p[:n])
	r.Left -= n
	return n, nil
}

func testEnqueueBodyError(t *testing.T, e *env) {
	cause := errors.New("client connection lost")
	for _, size := range []int{0, 100, 600 << 10} {
		id := fmt.Sprintf("broken-%d", size)
		m := e.msg(id)
		m.Body = &FailingReader{Left: size, Err: cause}
		err := e.s.Enqueue(e.ctx, m)
		wantErr(t, "Enqueue of an unreadable body", err, cause)
		_, err = e.s.Get(e.ctx, id)
		wantErr(t, "Get after a failed Enqueue", err, store.ErrNotFound)
		_, _, err = e.s.History(e.ctx, id)
		wantErr(t, "History after a failed Enqueue", err, store.ErrNotFound)
	}
	e.enqueue(e.msg("after")) // the store still works
	if !bytes.Equal(e.body("after"), bodyOf("after")) {
		t.Error("body differs after a failed Enqueue")
	}
}

func testEnqueueInvalid(t *testing.T, e *env) {
	cases := []struct {
		name string
		edit func(m *store.NewMessage)
	}{
		{"no ID", func(m *store.NewMessage) { m.ID = "" }},
		{"empty reverse-path", func(m *store.NewMessage) { m.From = "" }},
		{"no recipients", func(m *store.NewMessage) { m.Rcpts = nil }},
		{"final state", func(m *store.NewMessage) { m.State = store.StateDelivered }},
		{"bad recipient state", func(m *store.NewMessage) { m.Rcpts[0].State = "maybe" }},
		{"lease without an end", func(m *store.NewMessage) { m.LeaseOwner = "w1" }},
		{"held and leased", func(m *store.NewMessage) {
			m.State, m.LeaseOwner, m.LeaseUntil = store.StateHeld, "w1", e.at(time.Minute)
		}},
	}
	for _, tc := range cases {
		m := e.msg("invalid")
		tc.edit(m)
		if err := e.s.Enqueue(e.ctx, m); err == nil {
			t.Errorf("%s: Enqueue succeeded", tc.name)
		}
	}
	if got := e.listIDs(store.Filter{}); len(got) != 0 {
		t.Errorf("invalid messages were stored: %v", got)
	}
}

func testEnqueueHistory(t *testing.T, e *env) {
	m := e.msg("h1", withRcpts("<a@example.net>", "<b@example.net>"))
	e.enqueue(m)
	rec, events := e.history("h1")
	want := &store.Record{
		ID: "h1", Mode: "queue", Listener: m.Listener, Client: m.Client, Account: m.Account,
		From: m.From, Rcpts: []string{"<a@example.net>", "<b@example.net>"}, Size: m.Size,
		HeaderID: m.HeaderID, Received: m.Received, State: store.StateQueued,
	}
	if rec.Updated.Before(m.Received) {
		t.Errorf("history record updated %v, before it was received (%v)", rec.Updated, m.Received)
	}
	if diff := cmp.Diff(want, rec, cmpopts.IgnoreFields(store.Record{}, "Updated")); diff != "" {
		t.Errorf("history record (-want +got):\n%s", diff)
	}
	if len(events) != 1 || events[0].Type != store.EventAccepted || !events[0].At.Equal(m.Received) {
		t.Errorf("events = %v, want one %s at Received", eventKinds(events), store.EventAccepted)
	}
}

func sortedIDs(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
