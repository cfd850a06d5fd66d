package queue

import (
	"errors"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Review X: the "delayed" notice is queued (its own store transaction)
// before the attempt is recorded, and the history event that makes it
// "once" is written only after Finish succeeded. A Finish that fails (a
// store timeout, a lost lease) or a crash between the two leaves a queued
// notice and no event: the next attempt sends the sender a second one.
// README "Queue mode" promises one.
func TestReviewXDelayNoticeOnceEvenWhenFinishFails(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.rcpt = func(transport.Envelope, string) error {
		return reply(451, smtp.EnhancedCode{4, 2, 1}, "mailbox busy")
	}
	h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{
		"slow@example.net": {Notify: []string{"DELAY", "FAILURE"}},
	})
	h.step()
	h.clock.Advance(4*time.Hour + time.Minute)
	failOnce := true
	h.st.mu.Lock()
	h.st.finishErr = func(string) error {
		if failOnce {
			failOnce = false
			return errors.New("disk I/O error")
		}
		return nil
	}
	h.st.mu.Unlock()
	h.step() // the delay notice goes out; recording the attempt fails
	h.clock.Advance(DefaultLease + 10*time.Minute)
	h.step() // the lease ran out: the message is tried again
	n := 0
	for _, c := range h.notes.snapshot() {
		if c.failed[0].Action == "delayed" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d delay notices for one recipient, want 1", n)
	}
}

// Review X: a recipient that has only ever been postponed (the account's
// daily limit, an open circuit, a busy pool: "not now", no reply) gets a
// "delayed" notice whose Status is statusOf("") = "5.0.0", a permanent
// failure code, in a report whose Action is "delayed" (RFC 3464 §2.3.4:
// a delayed action carries a 4.X.X status). A daily limit that holds
// mail for more than delay_warning is the ordinary case at Google's
// 2,000 messages a day.
func TestReviewXDelayedNoticeForAPostponedRecipientHasATransientStatus(t *testing.T) {
	h := newHarness(t, testConfig())
	h.manual()
	h.tr.begin = func(transport.Envelope) error {
		return &transport.Error{Kind: transport.KindLimit, Limit: "daily_messages",
			Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Sending limit reached"},
			Err:   errors.New("daily limit")}
	}
	h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{
		"slow@example.net": {Notify: []string{"DELAY", "FAILURE"}},
	})
	h.step()
	h.clock.Advance(4*time.Hour + time.Minute)
	h.step()
	var got []Failure
	for _, c := range h.notes.snapshot() {
		if c.failed[0].Action == "delayed" {
			got = append(got, c.failed...)
		}
	}
	if len(got) != 1 {
		t.Fatalf("delay notices %+v, want one", got)
	}
	if s := got[0].Status; s == "" || s[0] != '4' {
		t.Errorf("a delayed recipient reported with Status %q, want 4.X.X", s)
	}
}

// Review X: "relayed" and "delayed" courtesy notices draw on the same
// per-sender max_bounces_per_hour as failure notices, and a failure
// notice over the cap is dropped for good (suppressed "rate", handled).
// A sender that asks NOTIFY=SUCCESS,FAILURE through a provider without
// DSN (smtp.gmail.com offers none) spends the cap on success reports;
// the next permanent failure within the hour is never reported — a lost
// bounce, the one notice RFC 3461 makes the default.
func TestReviewXCourtesyNoticesDoNotStarveFailureNotices(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBouncesPerHour = 2
	h := newHarness(t, cfg)
	h.manual()
	h.tr.rcpt = func(_ transport.Envelope, rcpt string) error {
		if rcpt == "gone@example.net" {
			return reply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	}
	both := transport.RcptOptions{Notify: []string{"SUCCESS", "FAILURE"}}
	for range 2 {
		h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{"ok@example.net": both})
		h.step()
	}
	h.submitDSN(transport.MailOptions{}, map[string]transport.RcptOptions{"gone@example.net": both})
	h.step()
	failures := 0
	for _, c := range h.notes.snapshot() {
		if c.failed[0].Action == "" || c.failed[0].Action == "failed" {
			failures++
		}
	}
	if failures != 1 {
		t.Errorf("%d failure notices for a permanent failure after two success reports (cap %d), want 1",
			failures, cfg.MaxBouncesPerHour)
	}
}
