package queue

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// submitDSN queues a message with DSN parameters, as a queue listener's
// session passes them on.
func (h *harness) submitDSN(mail transport.MailOptions, rcpts map[string]transport.RcptOptions) string {
	h.t.Helper()
	id := transport.NewID()
	d, err := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: id, Account: acct, From: "sender@example.com", Mail: mail})
	if err != nil {
		h.t.Fatal(err)
	}
	addrs := make([]string, 0, len(rcpts))
	for a := range rcpts {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		if err := d.AddRcpt(context.Background(), a, rcpts[a]); err != nil {
			h.t.Fatal(err)
		}
	}
	if _, err := d.Body(context.Background(), stringMessage("Subject: dsn\r\n\r\nhello\r\n")); err != nil {
		h.t.Fatal(err)
	}
	return id
}

// The MAIL and RCPT parameters are stored with the message and handed
// back to the transport at delivery, with OwnNotices set.
func TestQueueKeepsTheMailAndRcptParameters(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	mail := transport.MailOptions{Size: int64(len("Subject: dsn\r\n\r\nhello\r\n")), Body: smtp.Body8BitMIME, UTF8: true, Return: "HDRS", EnvelopeID: "batch 7+x=y"}
	rcpt := transport.RcptOptions{Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "utf-8;jösé@example.org"}
	id := h.submitDSN(mail, map[string]transport.RcptOptions{"r@example.net": rcpt, "plain@example.net": {}})
	env := h.env(id)
	if want := []string{"BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=batch+207+2Bx+3Dy"}; !slices.Equal(env.MailParams, want) {
		t.Errorf("stored MAIL parameters %q, want %q", env.MailParams, want)
	}
	if r := rcptOf(env, "r@example.net"); r.Notify != "SUCCESS,FAILURE" || r.ORcpt != "utf-8;jösé@example.org" {
		t.Errorf("stored recipient %+v", r)
	}
	h.step()
	_, _, out := h.tr.snapshot()
	if len(out) != 1 {
		t.Fatalf("%d deliveries, want 1", len(out))
	}
	want := mail
	want.OwnNotices = true
	if got := out[0].env.Mail; got != want {
		t.Errorf("delivery MAIL options %+v, want %+v", got, want)
	}
	if got := out[0].rcptOpts["r@example.net"]; !slices.Equal(got.Notify, rcpt.Notify) || got.ORcpt != rcpt.ORcpt {
		t.Errorf("delivery RCPT options %+v, want %+v", got, rcpt)
	}
	if got := out[0].rcptOpts["plain@example.net"]; got.DSN() {
		t.Errorf("a recipient without DSN parameters got %+v", got)
	}
}

// NOTIFY=DELAY: one "delayed" notice once the recipient has been pending
// for the delay warning (the default, 4h), never before and never twice;
// recipients that did not ask get none.
func TestQueueSendsOneDelayNotice(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(451, smtp.EnhancedCode{4, 2, 1}, "mailbox busy")
	}
	id := h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{
		"slow@example.net":  {Notify: []string{"DELAY", "FAILURE"}, ORcpt: "rfc822;Slow@example.org"},
		"quiet@example.net": {},
	})
	delays := func() []notifyCall {
		var out []notifyCall
		for _, c := range h.notes.snapshot() {
			if c.failed[0].Action == "delayed" {
				out = append(out, c)
			}
		}
		return out
	}
	h.step()
	for _, adv := range []time.Duration{time.Hour, 2*time.Hour + 58*time.Minute} { // 3h58m in all
		h.clock.Advance(adv)
		h.step()
	}
	if n := len(delays()); n != 0 {
		t.Fatalf("%d delay notices before %s", n, DefaultDelayWarning)
	}
	h.clock.Advance(5 * time.Minute)
	h.step()
	got := delays()
	if len(got) != 1 || got[0].orig != id || len(got[0].failed) != 1 {
		t.Fatalf("delay notices %+v, want one about slow@example.net", got)
	}
	f := got[0].failed[0]
	if f.Rcpt != "slow@example.net" || f.ORcpt != "rfc822;Slow@example.org" || f.Status != "4.2.1" ||
		!f.WillRetryUntil.Equal(t0.Add(24*time.Hour)) || !strings.Contains(f.Reply, "mailbox busy") {
		t.Errorf("delay notice reports %+v", f)
	}
	if env := h.env(id); env.State != store.StateQueued || rcptOf(env, "slow@example.net").State != store.RcptPending {
		t.Errorf("the message must stay queued after its delay notice: %+v", env)
	}
	for range 3 {
		h.clock.Advance(10 * time.Minute)
		h.step()
	}
	if n := len(delays()); n != 1 {
		t.Errorf("%d delay notices, want exactly one per recipient", n)
	}
}

// NOTIFY=SUCCESS: a "relayed" notice when the provider took no DSN
// parameters (RFC 3461 §5.2.2), none when it did (its own reaches the
// sender), and none for recipients that did not ask.
func TestQueueRelayedNoticeOnlyWithoutProviderDSN(t *testing.T) {
	for _, providerDSN := range []bool{false, true} {
		t.Run(map[bool]string{false: "provider without DSN", true: "provider with DSN"}[providerDSN], func(t *testing.T) {
			h := newHarness(t, testConfig())
			h.manual()
			h.tr.body = func(context.Context, transport.Envelope, []string) (transport.Result, error) {
				return transport.Result{Reply: "250 2.0.0 OK", DSN: providerDSN}, nil
			}
			id := h.submitDSN(transport.MailOptions{EnvelopeID: "e1"}, map[string]transport.RcptOptions{
				"asks@example.net":  {Notify: []string{"SUCCESS"}},
				"never@example.net": {Notify: []string{"NEVER"}},
				"plain@example.net": {},
			})
			h.step()
			calls := h.notes.snapshot()
			if providerDSN {
				if len(calls) != 0 {
					t.Fatalf("notices %+v although the provider notifies itself", calls)
				}
				return
			}
			if len(calls) != 1 || calls[0].orig != id {
				t.Fatalf("notices %+v, want one relayed notice", calls)
			}
			if f := calls[0].failed; len(f) != 1 || f[0].Action != "relayed" || f[0].Rcpt != "asks@example.net" || f[0].Status != "2.0.0" {
				t.Errorf("relayed notice reports %+v", f)
			}
			if env := h.env(id); env.State != store.StateDelivered {
				t.Errorf("state %s, want delivered", env.State)
			}
		})
	}
}

// queue { delay_warning } sets when the delay notice comes.
func TestDelayWarningIsConfigurable(t *testing.T) {
	cfg := testConfig()
	cfg.DelayWarning = 30 * time.Minute
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(451, smtp.EnhancedCode{4, 2, 1}, "mailbox busy")
	}
	h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{
		"slow@example.net": {Notify: []string{"DELAY", "FAILURE"}},
	})
	notices := func() int { return len(h.notes.snapshot()) }
	h.step()
	h.clock.Advance(29 * time.Minute)
	h.step()
	if n := notices(); n != 0 {
		t.Fatalf("%d notices 29 minutes after arrival, with delay_warning 30m", n)
	}
	h.clock.Advance(6 * time.Minute) // the next attempt (retry schedule: +5m)
	h.step()
	if got := h.notes.snapshot(); len(got) != 1 || got[0].failed[0].Action != "delayed" {
		t.Fatalf("notices at the attempt 35 minutes after arrival: %+v, want one delay notice", got)
	}
}
