package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// failedRcpt is a recipient an attempt failed for good, as a notification
// reports it.
type failedRcpt struct {
	rcpt   store.Recipient
	status string // RFC 3463 status
	diag   string // what the recipient's record and the history say
	reply  string // the provider's last reply, "" when none
	reason string // the queue's own reason (expiry), "" when the reply says it
}

// summary counts what an attempt left of the message's recipients.
type summary struct {
	delivered, pending int
	failed             []failedRcpt
}

// result is the store's record of an attempt (plus what it means).
func result(c *store.Claimed, o *outcome, now, until time.Time, cfg Config) (store.Result, summary) {
	res := store.Result{At: now, Rcpts: o.rcpts, Reply: o.reply, Counted: o.counted()}
	var sum summary
	expired := !now.Before(cfg.expires(c))
	for _, r := range pendingRcpts(&c.Envelope) {
		if n, ok := o.rcpts[r.Addr]; ok {
			r = n
		}
		switch {
		case r.State == store.RcptDelivered:
			sum.delivered++
		case r.State == store.RcptFailed:
			sum.failed = append(sum.failed, failedRcpt{rcpt: r, status: statusOf(r.LastReply), diag: r.LastReply, reply: r.LastReply})
		case expired:
			f := expire(c, r, o, cfg)
			res.Rcpts[r.Addr] = f.rcpt
			res.Reply = f.diag
			sum.failed = append(sum.failed, f)
		default:
			sum.pending++
		}
	}
	switch {
	case !res.Counted:
		res.NextAttempt = until
	default:
		// The first failed attempt waits RetrySchedule[0]; a "not now" on
		// part of the message may push it further.
		res.NextAttempt = now.Add(cfg.retryAfter(c.Attempts))
		if until.After(res.NextAttempt) {
			res.NextAttempt = until
		}
	}
	return res, sum
}

// expire fails a recipient still pending when the message's lifetime is
// over (RFC 3463 4.4.7: delivery time expired).
func expire(c *store.Claimed, r store.Recipient, o *outcome, cfg Config) failedRcpt {
	last := r.LastReply
	if last == "" {
		last = o.reply
	}
	if last == "" {
		last = c.LastReply
	}
	reason := fmt.Sprintf("delivery time expired after %s in the queue", lifetime(cfg.MaxLifetime))
	shown := last
	if shown == "" {
		shown = "none"
	}
	diag := reason + "; last reply: " + shown
	r.State, r.LastReply = store.RcptFailed, diag
	return failedRcpt{rcpt: r, status: "4.4.7", diag: diag, reply: last, reason: reason}
}

// lifetime writes a duration the way the configuration does ("5d", "36h").
func lifetime(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// statusOf returns the RFC 3463 status of a reply line ("550 5.1.1 ..."),
// or the class's generic status when the reply has none.
func statusOf(reply string) string {
	f := strings.Fields(reply)
	if len(f) == 0 || len(f[0]) != 3 || (f[0][0] != '4' && f[0][0] != '5') {
		return "5.0.0"
	}
	if len(f) > 1 && isStatus(f[1]) && f[1][0] == f[0][0] {
		return f[1]
	}
	return f[0][:1] + ".0.0"
}

func isStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 {
		return false
	}
	for _, p := range parts {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// conclude records an attempt: the account's postponement, the
// recipients' new states, expiry, the notification and the next attempt.
func (q *Queue) conclude(l *lease, o *outcome) {
	c := l.c
	if l.ctx.Err() != nil {
		l.end()
		if l.lost.Load() {
			q.log.Warn("attempt not recorded: the lease was lost", "id", c.ID, "account", c.Account)
		} else {
			q.log.Warn("delivery abandoned at shutdown; it will be tried again", "id", c.ID, "account", c.Account)
		}
		return
	}
	// Record the attempt even if Stop abandons deliveries meanwhile: a
	// finished delivery must not be repeated after a restart.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), storeTimeout)
	defer cancel()
	now, cfg := q.now(), q.config()
	var until time.Time
	if o.notNow != nil {
		until = q.postpone(ctx, c.Account, o.notNow, now)
		q.m.postponed.WithLabelValues(postponeReason(o.notNow)).Inc()
	}
	if o.counted() {
		q.attemptCounted(c.Account)
	}
	res, sum := result(c, o, now, until, cfg)
	var notice string
	if len(sum.failed) > 0 {
		// Queued before Finish removes the original's body (the notice
		// quotes its header); a lost lease may then cause a second
		// notice, never none.
		var queued bool
		notice, queued = q.bounce(ctx, c, sum.failed, now, cfg)
		if !queued {
			// The sender must hear of the failure: keep the recipients
			// (and the body) until a notification can be stored.
			sum = keepForNotice(&res, sum, now, cfg)
		}
	}
	courtesy := q.courtesyNotices(ctx, c, o, res, now, cfg)
	// The lease is renewed until the result is recorded: a store that
	// fails for a moment must not make a delivered message go out again.
	err := q.finish(l, res, cfg)
	l.end()
	if err != nil {
		q.finishFailed(c, err)
		return
	}
	q.changed()
	if notice != "" {
		q.recordNotice(ctx, c.ID, notice, now)
	}
	q.recordEvents(ctx, c.ID, courtesy)
	q.logAttempt(c, o, res, sum, notice)
}

// finish records res, retrying a store that is unavailable for a moment
// (locked by an operator's command, a full disk) while the lease is still
// this instance's, for up to one lease period.
func (q *Queue) finish(l *lease, res store.Result, cfg Config) error {
	deadline := time.Now().Add(cfg.Lease)
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), storeTimeout)
		err := q.st.Finish(ctx, l.c.ID, cfg.Owner, res)
		cancel()
		if err == nil || !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrLeaseLost) ||
			l.lost.Load() || try >= maxFinishTries || time.Now().Add(wait).After(deadline) || q.workCtx.Err() != nil {
			return err
		}
		q.storeError("finish")
		q.log.Warn("could not record a delivery attempt; retrying", "id", l.c.ID, "error", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-q.workCtx.Done():
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// maxFinishTries bounds the tries of one Finish (about 1.5 s of waits):
// beyond a passing lock the store is down, and the lease decides.
const maxFinishTries = 6

// keepForNotice turns the recipients that failed for good back into
// pending ones (with their reply) when their notification could not be
// stored, so that the next attempt fails them again and retries the
// notification; the message stays queued with its body.
func keepForNotice(res *store.Result, sum summary, now time.Time, cfg Config) summary {
	for _, f := range sum.failed {
		r := f.rcpt
		r.State, r.LastReply = store.RcptPending, f.diag
		res.Rcpts[r.Addr] = r
		sum.pending++
	}
	sum.failed = nil
	if next := now.Add(cfg.RetrySchedule[0]); res.NextAttempt.IsZero() || next.Before(res.NextAttempt) {
		res.NextAttempt = next
	}
	return sum
}

func (q *Queue) finishFailed(c *store.Claimed, err error) {
	switch {
	case errors.Is(err, store.ErrLeaseLost):
		q.log.Warn("attempt not recorded: the lease was lost to another worker", "id", c.ID, "account", c.Account)
		return
	case errors.Is(err, store.ErrNotFound):
		q.log.Info("attempt not recorded: the message was deleted during its delivery", "id", c.ID, "account", c.Account)
		return
	}
	q.storeError("finish")
	q.log.Error("could not record a delivery attempt; the message is tried again when its lease expires", "id", c.ID, "account", c.Account, "error", err)
}

func (q *Queue) recordNotice(ctx context.Context, id, notice string, now time.Time) {
	ev := &store.Event{ID: id, At: now, Type: store.EventNotified, Reply: notice}
	if err := q.st.Record(ctx, nil, []*store.Event{ev}); err != nil {
		q.storeError("record")
		q.log.Warn("could not add the notification to the message's history", "id", id, "notice", notice, "error", err)
	}
}

func (q *Queue) logAttempt(c *store.Claimed, o *outcome, res store.Result, sum summary, notice string) {
	log := q.log.With("id", c.ID, "account", c.Account)
	result := "delivered"
	switch {
	case len(sum.failed) > 0:
		result = "failed"
		log.Warn("recipients failed permanently", "attempts", c.Attempts, "counted", res.Counted, "failed", len(sum.failed), "delivered", sum.delivered, "pending", sum.pending, "reply", res.Reply, "notice", notice)
	case !res.Counted:
		log.Debug("delivery postponed without an attempt", "reason", postponeReason(o.notNow), "reply", res.Reply, "until", res.NextAttempt)
		return
	case sum.pending > 0:
		result = "deferred"
		log.Info("delivery deferred", "attempts", c.Attempts+1, "delivered", sum.delivered, "pending", sum.pending, "reply", res.Reply, "next_attempt", res.NextAttempt)
	default:
		log.Info("delivered", "attempts", c.Attempts+1, "rcpts", sum.delivered, "reply", res.Reply)
	}
	if res.Counted {
		q.m.attempts.WithLabelValues(result).Inc()
	}
}
