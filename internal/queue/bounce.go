package queue

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// bounce queues one delivery-status notification for the recipients an
// attempt failed, to the original sender through the same account, and
// returns its ID ("" when none was queued, with the reason counted).
// handled is false when a notification is due but could not be built or
// stored: the caller keeps the failure for another try.
func (q *Queue) bounce(ctx context.Context, c *store.Claimed, failed []failedRcpt, now time.Time, cfg Config) (id string, handled bool) {
	failures, reason := q.noticeFor(c, failed, now)
	if reason != "" {
		q.suppressed(c, reason, len(failed))
		return "", true
	}
	id, handled = q.sendNotice(ctx, c, failures, q.bounces, "", now, cfg)
	if id != "" {
		q.m.bounces.Inc()
	}
	return id, handled
}

// sendNotice builds and queues one notification about failures (all of
// one action) to the original sender, within the sender's hourly cap
// counted by rate, as the message id ("" for a new ID).
func (q *Queue) sendNotice(ctx context.Context, c *store.Claimed, failures []Failure, rate *bounceRate, id string, now time.Time, cfg Config) (string, bool) {
	failed := failures
	sender := strings.ToLower(c.From)
	if !rate.take(sender, now, cfg.MaxBouncesPerHour) {
		q.suppressed(c, "rate", len(failed))
		q.log.Warn("no delivery-status notification: the sender's hourly cap is reached", "id", c.ID, "account", c.Account, "failed", len(failed))
		return "", true
	}
	header := q.readHeader(ctx, c.ID)
	msg, ok, err := q.notify(&c.Envelope, header, failures, now)
	switch {
	case err != nil:
		rate.undo(sender, now)
		q.m.suppressed.WithLabelValues("error").Inc()
		q.log.Error("could not build a delivery-status notification; trying again later", "id", c.ID, "account", c.Account, "error", err)
		return "", false
	case !ok:
		rate.undo(sender, now)
		q.suppressed(c, "declined", len(failed))
		return "", true
	}
	id, err = q.enqueueNotice(ctx, c, msg, id, now, cfg)
	if err != nil {
		rate.undo(sender, now)
		q.storeError("enqueue_notice")
		q.log.Error("could not queue a delivery-status notification; it is tried again", "id", c.ID, "account", c.Account, "error", err)
		return "", false
	}
	q.log.Info("delivery-status notification queued", "id", c.ID, "account", c.Account, "notice", id, "action", actionName(failures[0].Action), "rcpts", len(failures))
	q.Kick()
	return id, true
}

func actionName(a string) string {
	if a == "" {
		return "failed"
	}
	return a
}

// Prefixes of the history events (EventNotified, per recipient) that
// record the notifications an attempt owed besides failures: a delayed
// one is sent once per recipient.
const (
	delayedEvent = "delayed "
	relayedEvent = "relayed "
)

// courtesyNotices queues the notifications an attempt owes besides
// failure notices, honouring the recipients' DSN requests (RFC 3461):
// "relayed" for delivered recipients that asked for SUCCESS from a
// provider that took no DSN parameters (§5.2.2), and "delayed", once,
// for recipients that asked for DELAY and are still pending
// queue { delay_warning } after the message arrived (RFC 3461 §4.1). It returns the history
// events to record once the attempt is.
func (q *Queue) courtesyNotices(ctx context.Context, c *store.Claimed, o *outcome, res store.Result, now time.Time, cfg Config) []*store.Event {
	if c.Bounce || c.From == "" || c.From == "<>" || q.notify == nil {
		return nil
	}
	var events []*store.Event
	if len(o.relayed) > 0 {
		var fs []Failure
		for _, r := range o.relayed {
			fs = append(fs, Failure{Action: "relayed", Rcpt: r.Addr, ORcpt: r.ORcpt, Status: "2.0.0", Reply: r.LastReply, LastAttempt: now})
		}
		events = append(events, q.courtesy(ctx, c, fs, relayedEvent, now, cfg)...)
	}
	q.delayNotice(ctx, c, res, now, cfg)
	return events
}

// delayNotice sends one "delayed" notification for the recipients owed
// one (at most one per recipient, ever: its history event is recorded
// before the notice is queued, so a failure to record the attempt, or a
// crash, cannot bring a second one; at worst a warning is lost). Its
// status is the recipient's transient one, or 4.0.0 for a recipient that
// was only postponed (RFC 3464 §2.3.3: delayed is a 4.X.X).
func (q *Queue) delayNotice(ctx context.Context, c *store.Claimed, res store.Result, now time.Time, cfg Config) {
	delayed := q.delayed(ctx, c, res, now, cfg)
	if len(delayed) == 0 {
		return
	}
	var fs []Failure
	for _, r := range delayed {
		status, last := statusOf(r.LastReply), now
		if !strings.HasPrefix(status, "4.") {
			status = "4.0.0"
		}
		if r.LastReply == "" {
			last = time.Time{} // the provider was never reached
		}
		fs = append(fs, Failure{Action: "delayed", Rcpt: r.Addr, ORcpt: r.ORcpt, Status: status,
			Reply: r.LastReply, LastAttempt: last, WillRetryUntil: cfg.expires(c)})
	}
	id := transport.NewID()
	events := make([]*store.Event, len(fs))
	for i, f := range fs {
		events[i] = &store.Event{ID: c.ID, At: now, Type: store.EventNotified, Rcpt: f.Rcpt, Reply: delayedEvent + id}
	}
	if err := q.st.Record(ctx, nil, events); err != nil {
		q.storeError("record")
		q.log.Warn("could not record a delay notice; not sending it now, the next attempt tries again", "id", c.ID, "error", err)
		return
	}
	if sent, _ := q.sendNotice(ctx, c, fs, q.courtesyRate, id, now, cfg); sent == "" {
		q.log.Warn("a delay notice was recorded but not sent; it is not tried again", "id", c.ID, "account", c.Account)
	}
}

// courtesy queues one "relayed" notification and returns its events, one
// per recipient (recorded with the attempt); none when it was not queued.
func (q *Queue) courtesy(ctx context.Context, c *store.Claimed, fs []Failure, prefix string, now time.Time, cfg Config) []*store.Event {
	id, _ := q.sendNotice(ctx, c, fs, q.courtesyRate, "", now, cfg)
	if id == "" {
		return nil
	}
	events := make([]*store.Event, len(fs))
	for i, f := range fs {
		events[i] = &store.Event{ID: c.ID, At: now, Type: store.EventNotified, Rcpt: f.Rcpt, Reply: prefix + id}
	}
	return events
}

// delayed returns the recipients owed a "delayed" notification after an
// attempt whose result is res.
func (q *Queue) delayed(ctx context.Context, c *store.Claimed, res store.Result, now time.Time, cfg Config) []store.Recipient {
	if now.Sub(c.Received) < cfg.DelayWarning {
		return nil
	}
	var due []store.Recipient
	for _, r := range pendingRcpts(&c.Envelope) {
		if n, ok := res.Rcpts[r.Addr]; ok {
			r = n
		}
		if r.State == store.RcptPending && transport.Notifies(rcptOptions(r).Notify, "DELAY") {
			due = append(due, r)
		}
	}
	if len(due) == 0 {
		return nil
	}
	_, events, err := q.st.History(ctx, c.ID)
	if err != nil {
		q.log.Warn("could not read a message's history to see whether its delay was notified; not notifying now", "id", c.ID, "error", err)
		return nil
	}
	done := map[string]bool{}
	for _, ev := range events {
		if ev.Type == store.EventNotified && strings.HasPrefix(ev.Reply, delayedEvent) {
			done[ev.Rcpt] = true
		}
	}
	out := due[:0]
	for _, r := range due {
		if !done[r.Addr] {
			out = append(out, r)
		}
	}
	return out
}

// recordEvents adds the notifications' events to the message's history.
func (q *Queue) recordEvents(ctx context.Context, id string, events []*store.Event) {
	if len(events) == 0 {
		return
	}
	if err := q.st.Record(ctx, nil, events); err != nil {
		q.storeError("record")
		q.log.Warn("could not add notifications to the message's history", "id", id, "error", err)
	}
}

// noticeFor returns the failures to report, or why none is sent: never
// about a notification (no loops), never to the null reverse-path (RFC
// 5321 §6.1, RFC 3464), never for recipients whose NOTIFY parameter
// excludes FAILURE (RFC 3461 §4.1).
func (q *Queue) noticeFor(c *store.Claimed, failed []failedRcpt, now time.Time) ([]Failure, string) {
	switch {
	case c.Bounce:
		return nil, "bounce"
	case c.From == "" || c.From == "<>":
		return nil, "null_sender"
	case q.notify == nil:
		return nil, "disabled"
	}
	var out []Failure
	for _, f := range failed {
		if !transport.Notifies(rcptOptions(f.rcpt).Notify, "FAILURE") {
			continue
		}
		out = append(out, Failure{Rcpt: f.rcpt.Addr, ORcpt: f.rcpt.ORcpt, Status: f.status, Reply: f.reply, Reason: f.reason, LastAttempt: now})
	}
	if len(out) == 0 {
		return nil, "notify"
	}
	return out, ""
}

func (q *Queue) suppressed(c *store.Claimed, reason string, n int) {
	q.m.suppressed.WithLabelValues(reason).Inc()
	q.log.Info("no delivery-status notification sent", "id", c.ID, "account", c.Account, "reason", reason, "failed", n)
}

// readHeader returns the header section of a queued message (at most
// transport.MaxHeader bytes), for the notification to quote; nil when the body
// cannot be read.
func (q *Queue) readHeader(ctx context.Context, id string) []byte {
	rc, err := q.st.Body(ctx, id)
	if err != nil {
		q.storeError("body")
		q.log.Warn("could not read a queued message's header for its notification", "id", id, "error", err)
		return nil
	}
	defer rc.Close()
	_, header, err := transport.ReadHeader(bufio.NewReader(rc), transport.MaxHeader)
	if err != nil {
		q.storeError("body")
		q.log.Warn("could not read a queued message's header for its notification", "id", id, "error", err)
	}
	return header
}

// enqueueNotice stores a notification as a new message from the account
// to the original sender. It is marked Bounce: if it fails in turn, no
// notification is sent about it.
func (q *Queue) enqueueNotice(ctx context.Context, c *store.Claimed, msg []byte, id string, now time.Time, cfg Config) (string, error) {
	_, header, _ := transport.ReadHeader(bufio.NewReader(bytes.NewReader(msg)), transport.MaxHeader)
	if id == "" {
		id = transport.NewID()
	}
	env := store.Envelope{
		ID:          id,
		Account:     c.Account,
		Listener:    c.Listener,
		Client:      "dsn:" + c.ID,
		From:        c.Account,
		Rcpts:       []store.Recipient{{Addr: c.From, State: store.RcptPending}},
		Size:        int64(len(msg)),
		HeaderID:    transport.MessageID(header),
		Received:    now,
		Expires:     now.Add(cfg.MaxLifetime),
		NextAttempt: now,
		State:       store.StateQueued,
		Bounce:      true,
	}
	if has8bit(msg) {
		env.MailParams = []string{"BODY=8BITMIME"}
	}
	if has8bit([]byte(c.From)) {
		// A sender address in UTF-8 is written as is in To (RFC 6532)
		// and needs SMTPUTF8 on the way (RFC 6531).
		env.MailParams = append(env.MailParams, "SMTPUTF8")
	}
	err := q.st.Enqueue(ctx, &store.NewMessage{Envelope: env, Body: bytes.NewReader(msg), Subject: q.historySubject(header)})
	return env.ID, err
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// bounceRate caps notifications per envelope sender over a sliding hour,
// in this instance's memory (several instances each allow the cap; a
// restart forgets).
type bounceRate struct {
	mu   sync.Mutex
	sent map[string][]time.Time
}

func newBounceRate() *bounceRate { return &bounceRate{sent: map[string][]time.Time{}} }

const bounceWindow = time.Hour

// take counts one notification to sender at now unless limit were
// exceeded (limit 0: no cap).
func (b *bounceRate) take(sender string, now time.Time, limit int) bool {
	if limit <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sent) > 10000 {
		for s, ts := range b.sent {
			if len(recent(ts, now)) == 0 {
				delete(b.sent, s)
			}
		}
	}
	ts := recent(b.sent[sender], now)
	if len(ts) >= limit {
		b.sent[sender] = ts
		return false
	}
	b.sent[sender] = append(ts, now)
	return true
}

// undo returns a notification taken at at that was not sent after all.
func (b *bounceRate) undo(sender string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.sent[sender]
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Equal(at) {
			b.sent[sender] = append(ts[:i], ts[i+1:]...)
			return
		}
	}
}

// recent drops the times that left the window.
func recent(ts []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(now.Add(-bounceWindow)) {
		i++
	}
	return ts[i:]
}
