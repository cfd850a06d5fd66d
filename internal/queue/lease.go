package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// lease is a claimed message this instance holds, and the goroutine that
// renews its lease every third of its duration until the message is
// finished or given back.
type lease struct {
	c      *store.Claimed
	ctx    context.Context // the delivery's; cancelled when the lease is lost or deliveries are abandoned
	cancel context.CancelFunc
	lost   atomic.Bool

	quitOnce sync.Once
	quit     chan struct{}
	exited   chan struct{}
	// forget tells the queue the message is no longer held (once).
	forget     func()
	forgetOnce sync.Once
	// body is the message in memory when it was handed over fresh
	// (fresh.go), nil when it is read from the store; releaseBody
	// returns its buffer once the lease ends.
	body        []byte
	releaseBody func()
}

// hold starts renewing the lease of a message just claimed.
func (q *Queue) hold(c *store.Claimed, owner string, d time.Duration) *lease {
	ctx, cancel := context.WithCancel(q.workCtx)
	l := &lease{c: c, ctx: ctx, cancel: cancel, quit: make(chan struct{}), exited: make(chan struct{}),
		forget: func() { q.dropHeld(c.ID) }}
	go q.keep(l, owner, d)
	return l
}

func (q *Queue) keep(l *lease, owner string, d time.Duration) {
	defer close(l.exited)
	t := time.NewTicker(max(d/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		err := q.st.Extend(l.ctx, l.c.ID, owner, q.now().Add(d))
		switch {
		case err == nil:
		case errors.Is(err, store.ErrLeaseLost):
			// Another worker may own the message now: stop this delivery
			// rather than send it twice.
			l.lost.Store(true)
			l.cancel()
			q.log.Warn("lease on a queued message lost; abandoning its delivery", "id", l.c.ID, "account", l.c.Account)
			return
		case l.ctx.Err() == nil:
			q.storeError("extend")
			q.log.Warn("could not renew a queued message's lease; retrying", "id", l.c.ID, "error", err)
		}
	}
}

// stop ends the renewals (before the message is finished or given back).
func (l *lease) stop() {
	l.quitOnce.Do(func() { close(l.quit) })
	<-l.exited
}

// end stops the renewals and releases the delivery's context.
func (l *lease) end() {
	l.stop()
	l.cancel()
	l.forgetOnce.Do(func() {
		l.forget()
		if l.releaseBody != nil {
			l.body = nil
			l.releaseBody()
		}
	})
}
