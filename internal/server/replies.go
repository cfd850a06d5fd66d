package server

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxHeldReplies bounds the replies a connection holds: a client that
// pipelines many commands gets their replies in writes of about this size.
const maxHeldReplies = 16 << 10

// maxHoldTime bounds how long a reply is held. Pipelined commands that
// are cheap to answer (RSET, MAIL and RCPT in queue mode) are answered
// microseconds apart and still leave together; a session that blocks
// before its next read (a direct-mode MAIL waiting for the provider, a
// Logout aborting an upstream transaction, the next message's MAIL sent
// in the same write as the previous message's final dot, RFC 2920 §3.1)
// must not keep the client waiting for replies it has earned.
const maxHoldTime = time.Millisecond

// abortFlushTime is how long a forced close (the shutdown deadline)
// gives the held replies to leave: a socket with room in its send buffer
// takes them at once; a client that does not read gets no more time.
const abortFlushTime = 50 * time.Millisecond

// replyBuffer holds a session's replies until the session waits for the
// client again, so that the replies to a group of pipelined commands
// leave in one write (RFC 2920 §3.2: a server should send the replies to
// grouped RSET, MAIL and RCPT commands as a unit, and must send every
// pending reply as soon as its input buffer is empty). go-smtp writes and
// flushes each reply line on its own; every write to a loopback or LAN
// socket costs a system call that also runs the receiver's TCP stack.
//
// The connection flushes the buffer before every read (go-smtp reads from
// the socket only once the commands it holds are all answered: its input
// buffer is empty), before it closes, when the buffer exceeds
// maxHeldReplies, and maxHoldTime after the first held reply. Writes go
// out under the deadline go-smtp set for the reply (write_timeout), which
// stays on the socket until the flush; a deadline moved earlier first
// sends what was held under the old one (crypto/tls sets a past deadline
// right after its close_notify alert).
type replyBuffer struct {
	out     net.Conn
	holdFor time.Duration // maxHoldTime but in tests
	mu      sync.Mutex
	buf     []byte
	// writing is set while a flush writes to the socket (see
	// flushBeforeAbort).
	writing atomic.Bool
	// timer flushes the buffer holdFor after it stopped being empty.
	timer *time.Timer
	// deadline is the socket's write deadline (zero: none).
	deadline time.Time
	// err is the first failed write: the connection is then unusable, and
	// every later write and read reports it.
	err error
}

// hold adds p to the buffer, writing the buffer out once it is full; the
// first reply held starts the maxHoldTime timer.
func (b *replyBuffer) hold(p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		b.startTimer()
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) < maxHeldReplies {
		return nil
	}
	return b.flushLocked()
}

func (b *replyBuffer) startTimer() {
	if b.timer == nil {
		b.timer = time.AfterFunc(b.holdFor, func() { _ = b.flush() })
		return
	}
	b.timer.Reset(b.holdFor)
}

// flush writes the held replies in one write.
func (b *replyBuffer) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// flushBeforeAbort gives the held replies abortFlushTime to leave before a
// forced close, unless a write is under way already (it may be blocked on
// a client that does not read; the close ends it). The session may hold
// the buffer for a moment (adding a reply): that is waited for.
func (b *replyBuffer) flushBeforeAbort() {
	until := time.Now().Add(abortFlushTime)
	for !b.mu.TryLock() {
		if b.writing.Load() || time.Now().After(until) {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	if len(b.buf) == 0 || b.err != nil {
		return
	}
	_ = b.out.SetWriteDeadline(time.Now().Add(abortFlushTime))
	_ = b.flushLocked()
}

func (b *replyBuffer) flushLocked() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.writing.Store(true)
	_, b.err = b.out.Write(b.buf)
	b.writing.Store(false)
	if cap(b.buf) > 2*maxHeldReplies {
		b.buf = nil // a burst of replies: do not keep its memory
	} else {
		b.buf = b.buf[:0]
	}
	return b.err
}

// setWriteDeadline sets the socket's write deadline. Held replies were
// promised the deadline in force when they were written: a deadline moved
// earlier sends them first.
func (b *replyBuffer) setWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && !t.IsZero() && (b.deadline.IsZero() || t.Before(b.deadline)) {
		_ = b.flushLocked() // a failure is kept for the next write or read
	}
	b.deadline = t
	return b.out.SetWriteDeadline(t)
}
