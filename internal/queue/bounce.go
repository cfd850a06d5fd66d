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
	header := q.readHeader(ctx, c.ID)
	sender := strings.ToLower(c.From)
	if !q.bounces.take(sender, now, cfg.MaxBouncesPerHour) {
		q.suppressed(c, "rate", len(failed))
		q.log.Warn("no delivery-status notification: the sender's hourly cap is reached", "id", c.ID, "account", c.Account, "failed", len(failed))
		return "", true
	}
	msg, ok, err := q.notify(&c.Envelope, header, failures, now)
	switch {
	case err != nil:
		q.bounces.undo(sender, now)
		q.m.suppressed.WithLabelValues("error").Inc()
		q.log.Error("could not build a delivery-status notification; trying again later", "id", c.ID, "account", c.Account, "error", err)
		return "", false
	case !ok:
		q.bounces.undo(sender, now)
		q.suppressed(c, "declined", len(failed))
		return "", true
	}
	id, err = q.enqueueNotice(ctx, c, msg, now, cfg)
	if err != nil {
		q.bounces.undo(sender, now)
		q.storeError("enqueue_notice")
		q.log.Error("could not queue a delivery-status notification; the failure is kept and tried again", "id", c.ID, "account", c.Account, "error", err)
		return "", false
	}
	q.m.bounces.Inc()
	q.log.Info("delivery-status notification queued", "id", c.ID, "account", c.Account, "notice", id, "failed", len(failures))
	q.Kick()
	return id, true
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
		if !wantsFailureNotice(f.rcpt.Notify) {
			continue
		}
		out = append(out, Failure{Rcpt: f.rcpt.Addr, ORcpt: f.rcpt.ORcpt, Status: f.status, Reply: f.reply, Reason: f.reason, LastAttempt: now})
	}
	if len(out) == 0 {
		return nil, "notify"
	}
	return out, ""
}

// wantsFailureNotice applies a recipient's NOTIFY parameter (RFC 3461
// §4.1): absent means failures are reported.
func wantsFailureNotice(notify string) bool {
	if notify == "" {
		return true
	}
	for _, v := range strings.Split(notify, ",") {
		if strings.EqualFold(strings.TrimSpace(v), "FAILURE") {
			return true
		}
	}
	return false
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
func (q *Queue) enqueueNotice(ctx context.Context, c *store.Claimed, msg []byte, now time.Time, cfg Config) (string, error) {
	_, header, _ := transport.ReadHeader(bufio.NewReader(bytes.NewReader(msg)), transport.MaxHeader)
	env := store.Envelope{
		ID:          transport.NewID(),
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
	err := q.st.Enqueue(ctx, &store.NewMessage{Envelope: env, Body: bytes.NewReader(msg)})
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
