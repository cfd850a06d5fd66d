package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// A message the queue has just accepted is usually deliverable at once: a
// worker is free and its account has room. Then the listener enqueues it
// already leased to this instance (store.NewMessage.LeaseOwner) and hands
// it, with its body still in memory, straight to a worker, as Postfix's
// queue manager takes a new message from the incoming queue without
// waiting for a scan. The store never has to find it (no Claim) nor read
// it back (no Body): the message costs the store its enqueue and its
// Finish. Durability is unchanged: the 250 still follows the commit, and
// should this instance die, the lease runs out and any instance delivers
// the message from the store, as it would a claimed one.

// freshMax is the largest message handed over in memory; a larger one
// waits for a claim and is read from the store in chunks. It bounds the
// memory of the handover to Workers × freshMax.
const freshMax = 256 << 10

// fresh is a worker slot reserved for a message being enqueued.
type fresh struct {
	q     *Queue
	owner string
	until time.Time
	lease time.Duration
	buf   *bytes.Buffer // the message, read before the enqueue
}

// reserveFresh reserves a worker slot for a message of size bytes for
// account, or returns nil when the message must wait for a claim: too
// large, no free worker, the account postponed or at its cap, the queue
// not running, or messages of the account already waiting in the
// backlog (they go first).
func (q *Queue) reserveFresh(account string, size int64, now time.Time) *fresh {
	if size > freshMax {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.handover || !q.started || q.stopping || q.running+q.fresh >= q.cfg.Workers {
		return nil
	}
	if a := q.accounts[account]; a != nil && (a.full() || now.Before(a.until)) {
		return nil
	}
	for _, l := range q.backlog {
		if l.c.Account == account {
			return nil
		}
	}
	q.fresh++
	q.freshWG.Add(1)
	return &fresh{q: q, owner: q.cfg.Owner, lease: q.cfg.Lease, until: now.Add(q.cfg.Lease)}
}

// read copies the received message into the slot's buffer.
func (f *fresh) read(r io.Reader) (*bytes.Reader, error) {
	// Not pooled: a transport that read after Body returned would
	// otherwise read the next message's bytes.
	f.buf = new(bytes.Buffer)
	if _, err := f.buf.ReadFrom(io.LimitReader(r, freshMax+1)); err != nil {
		return nil, err
	}
	if f.buf.Len() > freshMax {
		return nil, fmt.Errorf("the message grew past %d bytes while read", freshMax)
	}
	return bytes.NewReader(f.buf.Bytes()), nil
}

// cancel gives the slot back: the message was not stored.
func (f *fresh) cancel() {
	f.q.mu.Lock()
	f.q.fresh--
	f.q.mu.Unlock()
	f.release()
	f.q.freshWG.Done()
}

func (f *fresh) release() { f.buf = nil }

// start hands the stored message to a worker as if it had been claimed.
// When the store took so long that little of the lease is left (or a
// claim took the message meanwhile), or the queue has already returned
// its backlog at a stop, it does not: the message is delivered from the
// store, as any other.
func (f *fresh) start(env store.Envelope) {
	q := f.q
	defer q.freshWG.Done()
	q.mu.Lock()
	q.fresh--
	returned := q.backlogReturned
	q.mu.Unlock()
	if returned {
		f.giveBack(env.ID)
		return
	}
	if !q.now().Before(f.until.Add(-f.lease/3)) || !q.takeHeld(env.ID) {
		q.log.Warn("a new message is delivered from the store: its handover came too late", "id", env.ID, "account", env.Account)
		f.release()
		q.Kick()
		return
	}
	q.m.handedOver.Inc()
	c := &store.Claimed{Envelope: env, Owner: f.owner, LeaseUntil: f.until}
	l := q.hold(c, f.owner, f.lease)
	l.body, l.releaseBody = f.buf.Bytes(), f.release
	q.place(q.workCtx, l)
}

// giveBack releases the lease of a message stored after the queue
// stopped: nothing was attempted.
func (f *fresh) giveBack(id string) {
	f.release()
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	now := f.q.now()
	res := store.Result{At: now, Reply: "the relay stopped before delivering it", NextAttempt: now, Counted: false}
	if err := f.q.st.Finish(ctx, id, f.owner, res); err != nil {
		f.q.storeError("finish")
		f.q.log.Warn("could not give back a message stored while the queue stopped; its lease expires instead", "id", id, "error", err)
	}
}

// memMessage is a message body in memory as a transport.Message.
type memMessage []byte

func (m memMessage) Reader() (io.Reader, error) { return bytes.NewReader(m), nil }
func (m memMessage) Size() int64                { return int64(len(m)) }
