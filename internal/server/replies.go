package server

import (
	"io"
	"net"
	"sync"
	"time"
)

// maxHeldReplies bounds the replies a connection holds: a client that
// pipelines many commands gets their replies in writes of about this size.
const maxHeldReplies = 16 << 10

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
// buffer is empty), before it closes, and when the buffer exceeds
// maxHeldReplies. Writes go out under the deadline go-smtp set for the
// reply (write_timeout), which stays on the socket until the flush; a
// deadline moved earlier first sends what was held under the old one
// (crypto/tls sets a past deadline right after its close_notify alert).
type replyBuffer struct {
	mu  sync.Mutex
	buf []byte
	// deadline is the socket's write deadline (zero: none).
	deadline time.Time
	// err is the first failed write: the connection is then unusable, and
	// every later write and read reports it.
	err error
}

// hold adds p to the buffer, writing the buffer out to w once it is full.
func (b *replyBuffer) hold(w io.Writer, p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) < maxHeldReplies {
		return nil
	}
	return b.flushLocked(w)
}

// flush writes the held replies to w in one write.
func (b *replyBuffer) flush(w io.Writer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked(w)
}

func (b *replyBuffer) flushLocked(w io.Writer) error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	_, b.err = w.Write(b.buf)
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
func (b *replyBuffer) setWriteDeadline(conn net.Conn, t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && !t.IsZero() && (b.deadline.IsZero() || t.Before(b.deadline)) {
		_ = b.flushLocked(conn) // a failure is kept for the next write or read
	}
	b.deadline = t
	return conn.SetWriteDeadline(t)
}
