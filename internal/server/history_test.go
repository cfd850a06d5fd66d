package server_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// storeWait bounds waits for the relay's background writers: generous for
// -race on a busy two-core machine; each ends as soon as its condition
// holds.
const storeWait = 60 * time.Second

var (
	sentIDRE   = regexp.MustCompile(`message ([0-9A-Z]+) accepted by the provider`)
	queuedIDRE = regexp.MustCompile(`queued as ([0-9A-Z]+)`)
)

// queueListenerConfig is a second listener, "queued", that stores and
// forwards. It listens on another loopback address than the harness's
// "test" listener (two listeners on 127.0.0.1:0 are refused as one
// address).
const queueListenerConfig = `
listener "queued" {
  address                = "127.0.0.2:0"
  tls_mode               = "none"
  max_connections_per_ip = 0
  delivery               = "queue"
}
`

// openStore opens a second handle on the relay's store, as the `queue`
// commands do, to read what the relay wrote.
func openStore(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// idFrom extracts the relay's message ID from its 250 reply.
func idFrom(t *testing.T, re *regexp.Regexp, reply string) string {
	t.Helper()
	m := re.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("reply %q names no message ID", reply)
	}
	return m[1]
}

// awaitHistory waits until id's history record is in state and returns
// it with its events.
func awaitHistory(t *testing.T, st store.Store, id, state string) (*store.Record, []*store.Event) {
	t.Helper()
	var rec *store.Record
	var events []*store.Event
	testutil.WaitFor(t, storeWait, "history of "+id+" in state "+state, func() bool {
		var err error
		rec, events, err = st.History(context.Background(), id)
		return err == nil && rec.State == state
	})
	return rec, events
}

func eventTypes(events []*store.Event) string {
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	return strings.Join(types, ",")
}

// TestHistoryRecordsDirectAndQueuedMessages: the delivery history holds
// every message: sent and refused ones of a direct listener (written in
// the background) and delivered ones of a queue listener, each with its
// trail and the provider's replies.
func TestHistoryRecordsDirectAndQueuedMessages(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, harnessOptions{extraConfig: fmt.Sprintf("store {\n  path = %q\n  history_retention = \"1h\"\n}\n", dir) + queueListenerConfig})
	st := openStore(t, dir)

	sent := idFrom(t, sentIDRE, h.mustSend(appClient, alice, "direct@example.net"))
	h.sb.SMTP.FailNextData(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam"})
	_, err := h.send(appClient, alice, "spam@example.net")
	wantCode(t, err, "550 5.7.1")
	queuedReply, err := testutil.Send(h.rt.ListenerAddr("queued").String(), testutil.Mail{
		User: appClient, Password: h.password, From: bob, To: []string{"q1@example.net", "q2@example.net"},
		Body: "Subject: queued\r\nMessage-ID: <queued@client.test>\r\n\r\nhello\r\n"})
	if err != nil {
		t.Fatal(err)
	}
	queued := idFrom(t, queuedIDRE, queuedReply)

	tests := []struct {
		name, id, state, mode, listener, from, rcpts, trail, reply string
	}{
		{"direct, sent", sent, store.StateSent, "direct", "test", alice, "direct@example.net", "accepted,delivered", "250 2.0.0 OK"},
		{"queued, delivered", queued, store.StateDelivered, "queue", "queued", bob, "q1@example.net,q2@example.net", "accepted,delivered,delivered", "250 2.0.0 OK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, events := awaitHistory(t, st, tc.id, tc.state)
			if rec.Mode != tc.mode || rec.Listener != tc.listener || rec.Client != appClient || rec.Account != tc.from ||
				rec.From != tc.from || strings.Join(rec.Rcpts, ",") != tc.rcpts || rec.Size == 0 || rec.Received.IsZero() {
				t.Errorf("record = %+v", rec)
			}
			if got := eventTypes(events); got != tc.trail {
				t.Errorf("trail = %s, want %s", got, tc.trail)
			}
			if last := events[len(events)-1]; !strings.Contains(last.Reply, tc.reply) {
				t.Errorf("last event's reply = %q, want the provider's %q", last.Reply, tc.reply)
			}
		})
	}
	if rec, _ := awaitHistory(t, st, queued, store.StateDelivered); rec.HeaderID != "<queued@client.test>" {
		t.Errorf("queued message's Message-ID = %q", rec.HeaderID)
	}

	// The refused message has no ID in a reply: find it by its recipient
	// among the direct listener's history.
	t.Run("direct, refused", func(t *testing.T) {
		var refused []*store.Event
		testutil.WaitFor(t, storeWait, "the refused message's history", func() bool {
			refused = findRefused(t, st, h)
			return refused != nil
		})
		if got := eventTypes(refused); got != "accepted,refused" || !strings.HasPrefix(refused[1].Reply, "550 5.7.1") {
			t.Errorf("trail %s, reply %q", got, refused[1].Reply)
		}
	})
}

// findRefused returns the trail of the direct message to spam@example.net,
// nil while it is not recorded. The relay logs each message's ID.
func findRefused(t *testing.T, st store.Store, h *harness) []*store.Event {
	t.Helper()
	for _, m := range regexp.MustCompile(`msgid=([0-9A-Z]{16})`).FindAllStringSubmatch(h.logs.String(), -1) {
		rec, events, err := st.History(context.Background(), m[1])
		if err == nil && rec.State == store.StateRefused && strings.Join(rec.Rcpts, ",") == "spam@example.net" {
			return events
		}
	}
	return nil
}

// TestHistoryRetention: records older than history_retention are pruned
// when the relay starts and, with the hourly pass shortened, while it
// runs; recent ones stay.
func TestHistoryRetention(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	seed := openStore(t, dir)
	record(t, seed, "OLDDIRECT0000001", now.Add(-3*time.Hour))
	record(t, seed, "OLDREFUSED000001", now.Add(-90*time.Minute))
	record(t, seed, "RECENTDIRECT0001", now.Add(-10*time.Minute))
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}

	// At start (the next pass is an hour away).
	h := newHarness(t, harnessOptions{extraConfig: fmt.Sprintf("store {\n  path = %q\n  history_retention = \"1h\"\n}\n", dir)})
	st := openStore(t, dir)
	awaitPruned(t, st, "OLDDIRECT0000001")
	awaitPruned(t, st, "OLDREFUSED000001")
	wantKept(t, st, "RECENTDIRECT0001")
	// Logged once the pass, which ends with the keys no body needs, is over.
	testutil.WaitFor(t, storeWait, "the prune logged", func() bool {
		return strings.Contains(h.logs.String(), "pruned the delivery history: messages=2 older_than=1h0m0s")
	})

	// While running, restarted with passes every 200ms: a record that is
	// already old when written goes at a later pass. The history of a
	// message sent first proves that the pass at start is over.
	h.stop()
	server.SetHistoryPruneInterval(t, 200*time.Millisecond)
	h.start()
	fresh := idFrom(t, sentIDRE, h.mustSend(appClient, alice))
	awaitHistory(t, st, fresh, store.StateSent)
	record(t, st, "OLDWHILERUNNING1", time.Now().Add(-2*time.Hour))
	awaitPruned(t, st, "OLDWHILERUNNING1")
	wantKept(t, st, "RECENTDIRECT0001")
	wantKept(t, st, fresh)
}

// record writes a direct-mode history record last updated at `at`, with
// its trail.
func record(t *testing.T, st store.Store, id string, at time.Time) {
	t.Helper()
	rec := &store.Record{ID: id, Mode: "direct", Listener: "test", Client: appClient, Account: alice, From: alice,
		Rcpts: []string{"old@example.net"}, Size: 100, Received: at.Add(-time.Second), State: store.StateSent, Updated: at}
	events := []*store.Event{
		{ID: id, At: at.Add(-time.Second), Type: store.EventAccepted},
		{ID: id, At: at, Type: store.EventDelivered, Reply: "2.0.0 OK"},
	}
	if err := st.Record(context.Background(), []*store.Record{rec}, events); err != nil {
		t.Fatal(err)
	}
}

func awaitPruned(t *testing.T, st store.Store, id string) {
	t.Helper()
	testutil.WaitFor(t, storeWait, id+" pruned", func() bool {
		_, _, err := st.History(context.Background(), id)
		return errors.Is(err, store.ErrNotFound)
	})
}

func wantKept(t *testing.T, st store.Store, id string) {
	t.Helper()
	rec, events, err := st.History(context.Background(), id)
	if err != nil || rec == nil || len(events) < 2 {
		t.Errorf("history of %s: %+v, %d events, %v; want it kept", id, rec, len(events), err)
	}
}

// TestHistorySubjects: with store { history_subjects = true } the history
// keeps each message's decoded Subject (RFC 2047), direct and queued
// alike; without it (the default) none is stored. A reload turns it on
// and off for the messages accepted from then on.
func TestHistorySubjects(t *testing.T) {
	dir := t.TempDir()
	storeBlock := func(subjects bool) string {
		return fmt.Sprintf("store {\n  path = %q\n  history_subjects = %t\n}\n", dir, subjects) + queueListenerConfig
	}
	h := newHarness(t, harnessOptions{extraConfig: fmt.Sprintf("store {\n  path = %q\n}\n", dir) + queueListenerConfig})
	base := strings.TrimSuffix(h.cfgText, h.cfgText[strings.Index(h.cfgText, "store {"):])
	st := openStore(t, dir)
	// Folded, in two charsets; the space between encoded words is not
	// text (RFC 2047 §6.2), the one inside the first is.
	const body = "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_dem_?=\r\n =?ISO-8859-1?Q?B=FCro?= \u202e4 \r\nMessage-ID: <%s@client.test>\r\n\r\nhello\r\n"
	// send submits a message through the direct and the queue listener
	// and returns their history records.
	send := func(phase string) (direct, queued *store.Record) {
		t.Helper()
		mail := func(mode string) testutil.Mail {
			return testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{phase + "@example.net"},
				Body: fmt.Sprintf(body, phase+"-"+mode)}
		}
		reply, err := testutil.Send(h.rt.ListenerAddr("test").String(), mail("direct"))
		if err != nil {
			t.Fatal(err)
		}
		direct, _ = awaitHistory(t, st, idFrom(t, sentIDRE, reply), store.StateSent)
		reply, err = testutil.Send(h.rt.ListenerAddr("queued").String(), mail("queue"))
		if err != nil {
			t.Fatal(err)
		}
		queued, _ = awaitHistory(t, st, idFrom(t, queuedIDRE, reply), store.StateDelivered)
		return direct, queued
	}
	reload := func(subjects bool) {
		t.Helper()
		h.rewrite(base + storeBlock(subjects))
		if err := h.rt.Reload(context.Background()); err != nil {
			t.Fatalf("reload with history_subjects = %t: %v", subjects, err)
		}
	}
	const decoded = "Grüße aus dem Büro 4" // the override character left out
	for _, phase := range []struct {
		name    string
		reload  func()
		subject string
	}{
		{"default", func() {}, ""},
		{"on", func() { reload(true) }, decoded},
		{"off", func() { reload(false) }, ""},
	} {
		phase.reload()
		direct, queued := send(phase.name)
		for _, rec := range []*store.Record{direct, queued} {
			if rec.Subject != phase.subject || rec.HeaderID != "<"+phase.name+"-"+rec.Mode+"@client.test>" {
				t.Errorf("%s, %s mode: subject %q, Message-ID %q; want the subject %q", phase.name, rec.Mode, rec.Subject, rec.HeaderID, phase.subject)
			}
		}
	}
	// The console finds a message by its subject.
	found, err := st.Search(context.Background(), store.HistoryQuery{Subject: "BÜRO"})
	if err != nil || len(found) != 2 || found[0].Mode != "queue" || found[1].Mode != "direct" {
		t.Errorf("Search by subject = %+v, %v; want the two messages of the \"on\" phase, newest first", found, err)
	}
}
