package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func TestDeliveredMessageIsFinal(t *testing.T) {
	h := newHarness(t, testConfig())
	h.start(h.q)
	id := h.submitMessage("<s@example.com>", "Subject: x\r\n\r\nhello\r\n", "a@example.net", "b@example.net")
	eventually(t, "the message delivered", func() bool {
		env, _, _ := h.st.msg(id)
		return env.State == store.StateDelivered
	})
	env, hasBody, _ := h.st.msg(id)
	if hasBody {
		t.Error("the body of a delivered message is still stored")
	}
	if env.Attempts != 1 || rcptOf(env, "a@example.net").State != store.RcptDelivered || rcptOf(env, "b@example.net").LastReply != "250 2.0.0 OK fake" {
		t.Errorf("envelope after delivery = %+v", env)
	}
	_, _, out := h.tr.snapshot()
	if len(out) != 1 {
		t.Fatalf("transport got %d messages, want 1", len(out))
	}
	wantEnv := transport.Envelope{ID: id, Account: acct, From: "<s@example.com>", Listener: "printers", Client: "scanner",
		Mail: transport.MailOptions{Size: int64(len("Subject: x\r\n\r\nhello\r\n")), OwnNotices: true}}
	if diff := cmp.Diff(wantEnv, out[0].env); diff != "" {
		t.Errorf("delivery envelope (-want +got):\n%s", diff)
	}
	if !slices.Equal(out[0].rcpts, []string{"a@example.net", "b@example.net"}) || out[0].data != "Subject: x\r\n\r\nhello\r\n" {
		t.Errorf("transport got %+v", out[0])
	}
	eventually(t, "attempts_total{delivered}", func() bool { return h.metric("oauthrelay_queue_attempts_total", "result", "delivered") == 1 })
	eventually(t, "every route released", func() bool { return h.routes.outstanding() == 0 })
	if len(h.notes.snapshot()) != 0 {
		t.Error("a notification was built for a delivered message")
	}
}

func TestPartialDeferralRetriesOnSchedule(t *testing.T) {
	h := newHarness(t, testConfig()) // schedule 1m, 5m
	h.manual()
	tries := 0
	h.tr.rcpt = func(_ transport.Envelope, rcpt string) error {
		if rcpt == "b@example.net" {
			tries++
			if tries <= 2 {
				return reply(451, smtp.EnhancedCode{4, 2, 1}, "mailbox busy, try later")
			}
		}
		return nil
	}
	id := h.submit("<s@example.com>", "a@example.net", "b@example.net", "c@example.net")
	h.step()

	env := h.env(id)
	if env.State != store.StateQueued || env.Attempts != 1 || !env.NextAttempt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after the first attempt: state %s, attempts %d, next %s; want queued, 1, +1m", env.State, env.Attempts, env.NextAttempt)
	}
	b := rcptOf(env, "b@example.net")
	if b.State != store.RcptPending || b.LastReply != "451 4.2.1 mailbox busy, try later" {
		t.Errorf("b = %+v", b)
	}
	for _, r := range []string{"a@example.net", "c@example.net"} {
		if rcptOf(env, r).State != store.RcptDelivered {
			t.Errorf("%s = %+v, want delivered", r, rcptOf(env, r))
		}
	}

	// Not before its time.
	h.clock.Advance(time.Minute - time.Second)
	h.step()
	if begins, _, _ := h.tr.snapshot(); begins != 1 {
		t.Fatalf("an attempt was made before the retry time (%d begins)", begins)
	}
	// Second attempt at +1m: b is deferred again and waits the second step.
	h.clock.Advance(time.Second)
	h.step()
	env = h.env(id)
	if env.Attempts != 2 || !env.NextAttempt.Equal(t0.Add(time.Minute+5*time.Minute)) {
		t.Fatalf("after the second attempt: attempts %d, next %s; want 2, +6m", env.Attempts, env.NextAttempt.Sub(t0))
	}
	// Third at +6m: delivered; the last step repeats.
	h.clock.Advance(5 * time.Minute)
	h.step()
	env, hasBody, _ := h.st.msg(id)
	if env.State != store.StateDelivered || hasBody || env.Attempts != 3 {
		t.Fatalf("after the third attempt: state %s, attempts %d, body kept %v", env.State, env.Attempts, hasBody)
	}
	_, _, out := h.tr.snapshot()
	if len(out) != 2 || !slices.Equal(out[1].rcpts, []string{"b@example.net"}) {
		t.Errorf("deliveries = %+v; the retry must go to b only", out)
	}
	if got := h.metric("oauthrelay_queue_attempts_total", "result", "deferred"); got != 2 {
		t.Errorf("attempts_total{deferred} = %v, want 2", got)
	}
}

func TestPermanentFailureBouncesOncePerAttempt(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	attempt := 0
	h.tr.begin = func(transport.Envelope) error { attempt++; return nil }
	h.tr.rcpt = func(env transport.Envelope, rcpt string) error {
		switch {
		case rcpt == "x@example.net", rcpt == "y@example.net":
			return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		case rcpt == "p@example.net" && attempt == 1:
			return reply(451, smtp.EnhancedCode{4, 7, 0}, "later")
		case rcpt == "p@example.net":
			return reply(554, smtp.EnhancedCode{5, 7, 1}, "refused")
		}
		return nil
	}
	data := "Subject: report\r\nMessage-ID: <orig@client.test>\r\n\r\nsecret body\r\n"
	id := h.submitMessage("<Sender@Example.com>", data, "x@example.net", "ok@example.net", "y@example.net", "p@example.net")
	h.step()

	env := h.env(id)
	if rcptOf(env, "x@example.net").State != store.RcptFailed || rcptOf(env, "ok@example.net").State != store.RcptDelivered {
		t.Fatalf("recipients after the first attempt: %+v", env.Rcpts)
	}
	notices := h.st.bounces()
	if len(notices) != 1 {
		t.Fatalf("%d notifications after the first attempt, want 1 for both failed recipients", len(notices))
	}
	n := notices[0]
	want := store.Envelope{ID: n.ID, Account: acct, Listener: "printers", Client: "dsn:" + id, From: acct,
		Rcpts: []store.Recipient{{Addr: "<Sender@Example.com>", State: store.RcptPending}},
		Size:  n.Size, HeaderID: "<dsn-1@relay.test>", Received: t0, Expires: t0.Add(24 * time.Hour), NextAttempt: t0,
		State: store.StateQueued, Bounce: true}
	if diff := cmp.Diff(want, n); diff != "" {
		t.Errorf("notification envelope (-want +got):\n%s", diff)
	}
	if rec, _, err := h.st.History(context.Background(), n.ID); err != nil || rec.Subject != "" {
		t.Errorf("notification's history record: %+v, %v; want no subject without history_subjects", rec, err)
	}
	calls := h.notes.snapshot()
	if len(calls) != 1 || calls[0].orig != id || calls[0].header != "Subject: report\r\nMessage-ID: <orig@client.test>\r\n\r\n" {
		t.Fatalf("notifier calls = %+v; want one with the original's header section only", calls)
	}
	wantFailed := []Failure{
		{Rcpt: "x@example.net", Status: "5.1.1", Reply: "550 5.1.1 no such user", LastAttempt: t0},
		{Rcpt: "y@example.net", Status: "5.1.1", Reply: "550 5.1.1 no such user", LastAttempt: t0},
	}
	if diff := cmp.Diff(wantFailed, calls[0].failed); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
	if got := h.st.eventsOf(id, store.EventNotified); !slices.Equal(got, []string{n.ID}) {
		t.Errorf("notified events = %q, want [%s]", got, n.ID)
	}

	// The notification itself goes out through the same account, to the sender.
	h.step()
	_, _, out := h.tr.snapshot()
	last := out[len(out)-1]
	if last.env.ID != n.ID || last.env.From != acct || !slices.Equal(last.rcpts, []string{"<Sender@Example.com>"}) {
		t.Errorf("notification delivered as %+v", last)
	}

	// The second attempt fails p: a second notification, for p only.
	h.clock.Advance(time.Minute)
	h.step()
	if env := h.env(id); env.State != store.StateBounced {
		t.Fatalf("state after every recipient is done = %s, want bounced", env.State)
	}
	calls = h.notes.snapshot()
	if len(calls) != 2 || len(calls[1].failed) != 1 || calls[1].failed[0].Rcpt != "p@example.net" || calls[1].failed[0].Status != "5.7.1" {
		t.Fatalf("notifier calls = %+v; want a second one for p", calls)
	}
	if got := h.metric("oauthrelay_queue_bounces_total"); got != 2 {
		t.Errorf("bounces_total = %v, want 2", got)
	}
}

func TestNoNotificationAboutANotificationOrToTheNullSender(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.rcpt = func(env transport.Envelope, rcpt string) error {
		return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	}
	// A message from <> fails: nothing to notify.
	h.submit("", "x@example.net")
	h.step()
	if len(h.st.bounces()) != 0 || len(h.notes.snapshot()) != 0 {
		t.Fatal("a notification was made for the null sender")
	}
	if got := h.metric("oauthrelay_queue_bounces_suppressed_total", "reason", "null_sender"); got != 1 {
		t.Errorf("suppressed{null_sender} = %v, want 1", got)
	}
	// A message fails and is notified; its notification fails in turn: no loop.
	h.submit("<s@example.com>", "x@example.net")
	h.step() // the message: one notification
	h.step() // the notification: refused, no second one
	notices := h.st.bounces()
	if len(notices) != 1 {
		t.Fatalf("%d notifications, want exactly 1", len(notices))
	}
	if env, _, _ := h.st.msg(notices[0].ID); env.State != store.StateBounced {
		t.Errorf("the refused notification is %s, want bounced", env.State)
	}
	if got := h.metric("oauthrelay_queue_bounces_suppressed_total", "reason", "bounce"); got != 1 {
		t.Errorf("suppressed{bounce} = %v, want 1", got)
	}
}

func TestExpiryBouncesWith447(t *testing.T) {
	cfg := testConfig()
	cfg.MaxLifetime = time.Hour
	cfg.RetrySchedule = []time.Duration{20 * time.Minute}
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(451, smtp.EnhancedCode{4, 7, 0}, "temporarily deferred")
	}
	id := h.submit("<s@example.com>", "r@example.net")
	for i := 0; i < 3; i++ { // attempts at +0, +20m, +40m
		h.step()
		if env := h.env(id); env.State != store.StateQueued || env.Attempts != i+1 {
			t.Fatalf("attempt %d: state %s attempts %d", i+1, env.State, env.Attempts)
		}
		h.clock.Advance(20 * time.Minute)
	}
	h.step() // +60m: the lifetime is over
	env, hasBody, _ := h.st.msg(id)
	if env.State != store.StateBounced || hasBody {
		t.Fatalf("after max_lifetime: state %s, body kept %v", env.State, hasBody)
	}
	wantDiag := "delivery time expired after 1h in the queue; last reply: 451 4.7.0 temporarily deferred"
	if r := rcptOf(env, "r@example.net"); r.State != store.RcptFailed || r.LastReply != wantDiag {
		t.Errorf("recipient = %+v", r)
	}
	calls := h.notes.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d notifications, want 1", len(calls))
	}
	want := []Failure{{Rcpt: "r@example.net", Status: "4.4.7", Reply: "451 4.7.0 temporarily deferred", Reason: "delivery time expired after 1h in the queue", LastAttempt: t0.Add(time.Hour)}}
	if diff := cmp.Diff(want, calls[0].failed); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
}

func TestLimitPostponesTheAccountWithoutAnAttempt(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	h := newHarness(t, cfg)
	other := &fakeTransport{}
	h.routes.set("other@example.com", other, 0)
	h.manual()
	retryAt := t0.Add(30 * time.Second)
	limited := true
	h.tr.begin = func(transport.Envelope) error {
		if limited {
			limited = false
			return &transport.Error{Kind: transport.KindLimit, Limit: "messages_per_minute", RetryAt: retryAt,
				Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "account limit reached"}}
		}
		return nil
	}
	first := h.submit("<s@example.com>", "r@example.net")
	h.clock.Advance(time.Millisecond)
	second := h.submit("<s@example.com>", "r@example.net")
	h.clock.Advance(time.Millisecond)
	d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "OTHER", Account: "other@example.com", From: "<o@example.com>"})
	_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	if _, err := d.Body(context.Background(), stringMessage("Subject: o\r\n\r\n")); err != nil {
		t.Fatal(err)
	}

	h.step() // first: refused by the limit
	env := h.env(first)
	if env.State != store.StateQueued || env.Attempts != 0 || !env.NextAttempt.Equal(retryAt) {
		t.Fatalf("postponed message: state %s attempts %d next %s; want queued, 0, RetryAt", env.State, env.Attempts, env.NextAttempt)
	}
	if r := rcptOf(env, "r@example.net"); r.LastReply != "" {
		t.Errorf("a postponement changed the recipient's reply: %+v", r)
	}
	if got := h.metric("oauthrelay_queue_postponed_total", "reason", "limit"); got != 1 {
		t.Errorf("postponed_total{limit} = %v, want 1", got)
	}
	h.step() // the account is skipped: only the other account's message goes
	h.step()
	if begins, _, _ := h.tr.snapshot(); begins != 1 {
		t.Fatalf("the postponed account was tried %d times before RetryAt", begins)
	}
	if owner, _ := h.st.lease(second); owner != "" {
		t.Error("a message of the postponed account was claimed")
	}
	if _, _, out := other.snapshot(); len(out) != 1 {
		t.Fatalf("the other account's message was not delivered meanwhile")
	}

	h.clock.Advance(30 * time.Second)
	h.step()
	h.step()
	for _, id := range []string{first, second} {
		if env, _, _ := h.st.msg(id); env.State != store.StateDelivered || env.Attempts != 1 {
			t.Errorf("%s after RetryAt: state %s attempts %d", id, env.State, env.Attempts)
		}
	}
}

func TestTransportErrorClassification(t *testing.T) {
	limit := &transport.Error{Kind: transport.KindBusy, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "busy"}}
	tests := []struct {
		name      string
		bodyErr   error
		result    *transport.Result
		wantState map[string]string
		wantCount int // Attempts afterwards
		wantReply string
	}{
		{name: "ambiguous is retried", bodyErr: &transport.Error{Kind: transport.KindAmbiguous, Err: errors.New("connection lost after the final dot"),
			Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "state unknown"}},
			wantState: map[string]string{"a@example.net": store.RcptPending, "b@example.net": store.RcptPending}, wantCount: 1, wantReply: "451 4.4.2 state unknown"},
		{name: "5xx at DATA fails every accepted recipient", bodyErr: reply(552, smtp.EnhancedCode{5, 3, 4}, "message too big"),
			wantState: map[string]string{"a@example.net": store.RcptFailed, "b@example.net": store.RcptFailed}, wantCount: 1, wantReply: "552 5.3.4 message too big"},
		{name: "refused token is deferred, not bounced", bodyErr: &transport.Error{Kind: transport.KindAuth, Reply: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "token refused"}},
			wantState: map[string]string{"a@example.net": store.RcptPending, "b@example.net": store.RcptPending}, wantCount: 1, wantReply: "535 5.7.8 token refused"},
		{name: "busy pool at Body is not an attempt", bodyErr: limit,
			wantState: map[string]string{"a@example.net": store.RcptPending, "b@example.net": store.RcptPending}, wantCount: 0, wantReply: "451 4.3.2 busy"},
		{name: "per-recipient refusal at Body", result: &transport.Result{Reply: "202 accepted", Failed: map[string]error{"b@example.net": reply(550, smtp.EnhancedCode{5, 1, 10}, "recipient not found")}},
			wantState: map[string]string{"a@example.net": store.RcptDelivered, "b@example.net": store.RcptFailed}, wantCount: 1, wantReply: "202 accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig())
			h.manual()
			h.tr.body = func(context.Context, transport.Envelope, []string) (transport.Result, error) {
				if tt.result != nil {
					return *tt.result, nil
				}
				return transport.Result{}, tt.bodyErr
			}
			id := h.submit("<s@example.com>", "a@example.net", "b@example.net")
			h.step()
			env, _, _ := h.st.msg(id)
			for addr, state := range tt.wantState {
				if got := rcptOf(env, addr).State; got != state {
					t.Errorf("%s = %s, want %s", addr, got, state)
				}
			}
			if env.Attempts != tt.wantCount || env.LastReply != tt.wantReply {
				t.Errorf("attempts %d reply %q; want %d %q", env.Attempts, env.LastReply, tt.wantCount, tt.wantReply)
			}
		})
	}
}

func TestUnconfiguredAccountIsDeferred(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.routes.remove(acct)
	id := h.submit("<s@example.com>", "r@example.net")
	h.step()
	env := h.env(id)
	want := "451 4.3.5 account acct@example.com is not configured"
	if env.Attempts != 1 || env.LastReply != want || rcptOf(env, "r@example.net").LastReply != want || !env.NextAttempt.Equal(t0.Add(time.Minute)) {
		t.Errorf("envelope = attempts %d reply %q next %s", env.Attempts, env.LastReply, env.NextAttempt)
	}
	// A reload brings the account back.
	h.routes.set(acct, h.tr, 0)
	h.clock.Advance(time.Minute)
	h.step()
	if env, _, _ := h.st.msg(id); env.State != store.StateDelivered {
		t.Errorf("state = %s after the account came back", env.State)
	}
}

// A reload that shortens max_lifetime applies to the messages already
// queued, as Postfix's maximal_queue_lifetime does: they expire counted
// from their arrival under the new lifetime.
func TestShorterMaxLifetimeAppliesToQueuedMessages(t *testing.T) {
	cfg := testConfig() // MaxLifetime 24h
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(451, smtp.EnhancedCode{4, 7, 0}, "temporarily deferred")
	}
	id := h.submit("<s@example.com>", "r@example.net")
	h.step()
	if env := h.env(id); env.State != store.StateQueued || !env.Expires.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("after the first attempt: state %s expires %s", env.State, env.Expires.Sub(t0))
	}
	cfg.MaxLifetime = 2 * time.Hour
	h.q.SetConfig(cfg)
	h.clock.Advance(2 * time.Hour)
	h.step()
	env := h.env(id)
	want := "delivery time expired after 2h in the queue; last reply: 451 4.7.0 temporarily deferred"
	if r := rcptOf(env, "r@example.net"); env.State != store.StateBounced || r.LastReply != want {
		t.Errorf("two hours after a reload to max_lifetime 2h: state %s, recipient %+v", env.State, r)
	}
	if calls := h.notes.snapshot(); len(calls) != 1 || calls[0].failed[0].Status != "4.4.7" {
		t.Errorf("notifications %+v, want one 4.4.7", calls)
	}
}

func TestSetConfigChangesLaterAttempts(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error { return reply(421, smtp.EnhancedCode{4, 3, 2}, "later") }
	id := h.submit("<s@example.com>", "r@example.net")
	h.step()
	if next := h.env(id).NextAttempt; !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first retry at %s, want +1m", next.Sub(t0))
	}
	cfg := testConfig()
	cfg.RetrySchedule = []time.Duration{7 * time.Minute}
	h.q.SetConfig(cfg)
	h.clock.Advance(time.Minute)
	h.step()
	if next := h.env(id).NextAttempt; !next.Equal(t0.Add(8 * time.Minute)) {
		t.Errorf("second retry at %s, want +1m+7m", next.Sub(t0))
	}
	// An invalid configuration is refused and the previous one kept.
	bad := cfg
	bad.RetrySchedule = nil
	h.q.SetConfig(bad)
	if got := h.q.config().RetrySchedule; !slices.Equal(got, []time.Duration{7 * time.Minute}) {
		t.Errorf("schedule after an invalid reload = %v", got)
	}
	if !strings.Contains(h.logs.String(), "queue configuration refused") {
		t.Error("the refused configuration was not logged")
	}
}

func TestBounceRateCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBouncesPerHour = 2
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(env transport.Envelope, rcpt string) error {
		if env.From == acct {
			return nil // notifications are delivered
		}
		return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	}
	for i := 0; i < 3; i++ {
		h.submit("<loud@example.com>", "x@example.net")
	}
	h.submit("<quiet@example.com>", "x@example.net")
	h.step()
	if got := len(h.st.bounces()); got != 3 {
		t.Fatalf("%d notifications; want 2 for the loud sender and 1 for the quiet one", got)
	}
	if got := h.metric("oauthrelay_queue_bounces_suppressed_total", "reason", "rate"); got != 1 {
		t.Errorf("suppressed{rate} = %v, want 1", got)
	}
	// An hour later the sender may be notified again.
	h.clock.Advance(time.Hour + time.Second)
	h.submit("<LOUD@example.com>", "x@example.net")
	h.step()
	if got := len(h.st.bounces()); got != 4 {
		t.Errorf("%d notifications after an hour, want 4", got)
	}
}

func TestUnreadableStoredBodyIsDeferred(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.claimOnly() // a message handed over fresh is not read from the store
	id := h.submit("<s@example.com>", "r@example.net")
	h.st.mu.Lock()
	h.st.bodyErr = fmt.Errorf("sqlite: %w", store.ErrUnavailable)
	h.st.mu.Unlock()
	h.step()
	env := h.env(id)
	want := "451 4.3.0 the queue could not read the stored message"
	if env.State != store.StateQueued || env.Attempts != 1 || rcptOf(env, "r@example.net").LastReply != want {
		t.Errorf("after an unreadable body: state %s attempts %d rcpt %+v", env.State, env.Attempts, env.Rcpts)
	}
	if got := h.metric("oauthrelay_queue_store_errors_total", "op", "body"); got != 1 {
		t.Errorf("store_errors_total{op=body} = %v, want 1", got)
	}
}

func TestPostponementGivesBackTheAccountsWaitingMessages(t *testing.T) {
	h := newHarness(t, testConfig()) // Workers 4
	h.routes.set(acct, h.tr, 1)
	h.manual()
	h.claimOnly() // the claim puts all three in the backlog
	retryAt := t0.Add(time.Minute)
	h.tr.begin = func(transport.Envelope) error {
		return &transport.Error{Kind: transport.KindCircuit, Limit: "account", RetryAt: retryAt,
			Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "circuit open"}}
	}
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, h.submit("<s@example.com>", "r@example.net"))
		h.clock.Advance(time.Millisecond)
	}
	h.step() // one runs (cap 1), two wait; the circuit postpones all three
	if begins, _, _ := h.tr.snapshot(); begins != 1 {
		t.Fatalf("%d deliveries began; the account's cap is 1", begins)
	}
	for _, id := range ids {
		env := h.env(id)
		owner, _ := h.st.lease(id)
		if env.Attempts != 0 || !env.NextAttempt.Equal(retryAt) || owner != "" {
			t.Errorf("%s: attempts %d next %s lease %q; want 0, RetryAt, none", id, env.Attempts, env.NextAttempt.Sub(t0), owner)
		}
	}
	if got := h.metric("oauthrelay_queue_postponed_total", "reason", "circuit"); got != 3 {
		t.Errorf("postponed_total{circuit} = %v, want 3", got)
	}
}

func TestBusyPoolBacksOff(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.begin = func(transport.Envelope) error {
		return &transport.Error{Kind: transport.KindBusy, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "all connections busy"}}
	}
	id := h.submit("<s@example.com>", "r@example.net")
	for _, wait := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second} {
		h.step()
		env := h.env(id)
		if env.Attempts != 0 || !env.NextAttempt.Equal(h.clock.Now().Add(wait)) {
			t.Fatalf("postponed until +%s, want +%s (attempts %d)", env.NextAttempt.Sub(h.clock.Now()), wait, env.Attempts)
		}
		h.clock.Advance(wait)
	}
	if got := h.metric("oauthrelay_queue_postponed_total", "reason", "busy"); got != 5 {
		t.Errorf("postponed_total{busy} = %v, want 5", got)
	}
}

func TestNotifyNeverSuppressesTheNotification(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error { return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user") }
	env := store.Envelope{ID: "N1", Account: acct, From: "<s@example.com>", State: store.StateQueued,
		Received: t0, Expires: t0.Add(time.Hour), NextAttempt: t0, Size: 4,
		Rcpts: []store.Recipient{{Addr: "x@example.net", State: store.RcptPending, Notify: "NEVER"}, {Addr: "y@example.net", State: store.RcptPending, Notify: "SUCCESS,DELAY"}}}
	if err := h.st.Enqueue(context.Background(), &store.NewMessage{Envelope: env, Body: strings.NewReader("x\r\n\r\n")}); err != nil {
		t.Fatal(err)
	}
	h.step()
	if len(h.notes.snapshot()) != 0 || len(h.st.bounces()) != 0 {
		t.Error("a notification was sent although NOTIFY excludes failures")
	}
	if got := h.metric("oauthrelay_queue_bounces_suppressed_total", "reason", "notify"); got != 1 {
		t.Errorf("suppressed{notify} = %v, want 1", got)
	}
	wants := func(notify string) bool {
		return transport.Notifies(rcptOptions(store.Recipient{Notify: notify}).Notify, "FAILURE")
	}
	if !wants("success, Failure") || wants("NEVER") || !wants("") {
		t.Error("NOTIFY misread")
	}
}

// With history_subjects on, a notification's history record keeps its
// own Subject, as every queued message's does.
func TestNotificationKeepsItsSubjectWhenAsked(t *testing.T) {
	cfg := testConfig()
	cfg.HistorySubjects = true
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	}
	id := h.submitMessage("<sender@example.com>", "Subject: report\r\n\r\nbody\r\n", "x@example.net")
	h.step()
	notices := h.st.bounces()
	if len(notices) != 1 {
		t.Fatalf("%d notifications, want 1", len(notices))
	}
	for msg, want := range map[string]string{id: "report", notices[0].ID: "Undelivered Mail Returned to Sender"} {
		if rec, _, err := h.st.History(context.Background(), msg); err != nil || rec.Subject != want {
			t.Errorf("history record of %s: %+v, %v; want the subject %q", msg, rec, err, want)
		}
	}
}
