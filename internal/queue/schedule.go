package queue

import (
	"context"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Postponements without a RetryAt (a busy pool) back off from
// minPostpone, doubling, up to maxPostpone.
const (
	minPostpone = 5 * time.Second
	maxPostpone = 30 * time.Second
)

// account is what the scheduler knows of one account.
type account struct {
	inflight int
	cap      int       // Route.Concurrency when last resolved; 0 = no cap
	until    time.Time // postponed: none of its messages is started before
	reason   string    // why (a postponed_total reason)
	reply    string    // the refusal that postponed it
	backoff  time.Duration
}

func (a *account) full() bool { return a.cap > 0 && a.inflight >= a.cap }

func (q *Queue) accountLocked(name string) *account {
	a := q.accounts[name]
	if a == nil {
		a = &account{}
		q.accounts[name] = a
	}
	return a
}

// schedule claims due messages whenever it is kicked, a delivery ends, or
// Poll passes.
//
// The poll is a ticker that kicks do not reset: under steady traffic a
// wake comes at the end of every delivery, and a timer restarted by each
// would never fire, so messages that become due later (retries, an
// operator's retry, a dead instance's expired leases) would wait for a
// lull.
func (q *Queue) schedule(ctx context.Context) {
	defer close(q.schedDone)
	poll := q.config().Poll
	tick := time.NewTicker(poll)
	defer tick.Stop()
	q.claimable.Store(true) // the first claim: what the store holds already
	for {
		q.dispatch(ctx)
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
		case <-tick.C:
			// Time passed: retries became due, others' leases ran out.
			q.claimable.Store(true)
		}
		if p := q.config().Poll; p != poll {
			poll = p
			tick.Reset(poll)
		}
	}
}

// dispatch starts what the backlog can start, then, when the store may
// hold due messages, claims as many as there are free slots, until the
// store has no more.
func (q *Queue) dispatch(ctx context.Context) {
	q.runBacklog(ctx)
	for ctx.Err() == nil {
		now := q.now()
		free, skip, cfg := q.room(now)
		// Cleared before the claim: a message stored after the claim's
		// snapshot sets it again (Kick) and is claimed next time.
		if free <= 0 || !q.claimable.Swap(false) {
			return
		}
		claimed, err := q.st.Claim(ctx, cfg.Owner, now, free, cfg.Lease, skip)
		if err != nil {
			q.claimable.Store(true)
			if ctx.Err() == nil {
				q.claimFailed(err)
			}
			return
		}
		if len(claimed) == free || len(skip) > 0 {
			// There may be more, or due messages of the accounts left
			// out, which a finished delivery may make room for.
			q.claimable.Store(true)
		}
		q.claimWorked()
		for _, c := range claimed {
			if !q.takeHeld(c.ID) {
				q.log.Warn("a message this instance is still delivering was claimed again (its lease could not be renewed); not delivering it twice", "id", c.ID, "account", c.Account)
				continue
			}
			q.place(ctx, q.hold(c, cfg.Owner, cfg.Lease))
		}
		if len(claimed) < free {
			return
		}
	}
}

// takeHeld marks id as held by this instance; false when it already is.
func (q *Queue) takeHeld(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held == nil {
		q.held = map[string]bool{}
	}
	if q.held[id] {
		return false
	}
	q.held[id] = true
	return true
}

// dropHeld forgets id once its lease is finished or given back.
func (q *Queue) dropHeld(id string) {
	q.mu.Lock()
	delete(q.held, id)
	q.mu.Unlock()
}

// room returns how many messages to claim and which accounts to leave
// out: those postponed and those at their concurrency cap. The backlog
// (messages claimed for an account at its cap) counts against the claim
// so that the leases held locally stay below twice Workers.
func (q *Queue) room(now time.Time) (int, []string, Config) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopping {
		return 0, nil, q.cfg
	}
	free := min(q.cfg.Workers-q.running-q.fresh, q.cfg.Workers-len(q.backlog))
	var skip []string
	for name, a := range q.accounts {
		switch {
		case a.full() || now.Before(a.until):
			skip = append(skip, name)
		case a.inflight == 0 && a.backoff == 0:
			delete(q.accounts, name) // nothing left to remember
		}
	}
	return free, skip, q.cfg
}

func (q *Queue) claimFailed(err error) {
	q.storeError("claim")
	q.mu.Lock()
	first := !q.claimFailing
	q.claimFailing = true
	q.mu.Unlock()
	if first {
		q.log.Error("cannot claim queued messages; retrying every poll interval", "error", err)
	}
}

func (q *Queue) claimWorked() {
	q.mu.Lock()
	was := q.claimFailing
	q.claimFailing = false
	q.mu.Unlock()
	if was {
		q.log.Info("claiming queued messages works again")
	}
}

// runBacklog retries the claimed messages that waited for a slot.
func (q *Queue) runBacklog(ctx context.Context) {
	q.mu.Lock()
	held := q.backlog
	q.backlog = nil
	q.mu.Unlock()
	for _, l := range held {
		if l.lost.Load() {
			l.end()
			continue
		}
		q.place(ctx, l)
	}
}

// place starts a claimed message, keeps it in the backlog while its
// account is at its cap, or gives it back when the account is postponed.
func (q *Queue) place(ctx context.Context, l *lease) {
	name := l.c.Account
	now := q.now()
	q.mu.Lock()
	a := q.accountLocked(name)
	if now.Before(a.until) {
		until, reason, reply := a.until, a.reason, a.reply
		q.mu.Unlock()
		q.giveBack(ctx, []*lease{l}, until, reason, reply)
		return
	}
	if q.stopping || a.full() {
		q.backlog = append(q.backlog, l)
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()

	route, ok := q.resolve(name)
	q.mu.Lock()
	defer q.mu.Unlock()
	if ok {
		a.cap = route.Concurrency
	}
	if q.stopping || a.full() {
		q.backlog = append(q.backlog, l)
		if ok && route.Release != nil {
			route.Release()
		}
		return
	}
	q.running++
	a.inflight++
	q.workers.Add(1)
	q.m.inFlight.Inc()
	go q.work(l, route, ok)
}

// work runs one delivery attempt and records it.
func (q *Queue) work(l *lease, route Route, ok bool) {
	defer q.workers.Done()
	o := q.attempt(l.ctx, l.c, l.body, route, ok)
	if ok && route.Release != nil {
		route.Release()
	}
	q.conclude(l, o)
	q.mu.Lock()
	q.running--
	q.accountLocked(l.c.Account).inflight--
	q.mu.Unlock()
	q.m.inFlight.Dec()
	q.wake() // a slot is free: for the backlog, or for due messages still unclaimed
}

// postpone keeps the account's messages back after a "not now" (a
// limit, an open circuit, a busy pool) and returns until when. The
// account's messages already claimed and waiting are given back with
// that time.
func (q *Queue) postpone(ctx context.Context, name string, te *transport.Error, now time.Time) time.Time {
	q.mu.Lock()
	a := q.accountLocked(name)
	until := te.RetryAt
	if !until.After(now) {
		a.backoff = min(max(a.backoff*2, minPostpone), maxPostpone)
		until = now.Add(a.backoff)
	}
	if until.After(a.until) {
		a.until = until
	}
	a.reason, a.reply = postponeReason(te), "postponed: "+replyOf(te)
	var waiting []*lease
	kept := q.backlog[:0]
	for _, l := range q.backlog {
		if l.c.Account == name {
			waiting = append(waiting, l)
		} else {
			kept = append(kept, l)
		}
	}
	q.backlog = kept
	reason, reply := a.reason, a.reply
	q.mu.Unlock()
	q.giveBack(ctx, waiting, until, reason, reply)
	return until
}

// attemptCounted forgets the account's postponement backoff: it reached
// the provider again.
func (q *Queue) attemptCounted(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if a := q.accounts[name]; a != nil {
		a.backoff = 0
	}
}

// giveBack returns claimed messages to the store untouched but for their
// next attempt (an attempt that was not made does not count).
func (q *Queue) giveBack(ctx context.Context, held []*lease, until time.Time, reason, reply string) {
	if len(held) == 0 {
		return
	}
	owner := q.config().Owner
	for _, l := range held {
		l.end()
		res := store.Result{At: q.now(), Reply: reply, NextAttempt: until, Counted: false}
		if err := q.st.Finish(ctx, l.c.ID, owner, res); err != nil {
			q.finishFailed(l.c, err)
			continue
		}
		q.m.postponed.WithLabelValues(reason).Inc()
	}
	q.changed()
}
