package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Enqueue stores the messages in one commit shared with the other writes
// waiting at the time; it returns once that commit is fsync'd. The
// messages of one call are stored all or none. Envelope.Size is set to
// the bytes actually read from the body.
func (s *Store) Enqueue(ctx context.Context, msgs ...*store.NewMessage) error {
	if err := s.readable(); err != nil {
		return err
	}
	envs := make([]store.Envelope, len(msgs))
	for i, m := range msgs {
		e, err := engine.NormalizeNew(m)
		if err != nil {
			return err
		}
		envs[i] = e
	}
	if len(msgs) == 0 {
		return nil
	}
	rewind, rewindable := engine.Rewinder(msgs)
	return s.submit(ctx, &request{
		messages:   len(msgs),
		bodies:     true,
		rewind:     rewind,
		rewindable: rewindable,
		run: func(b *batch) error {
			for i, m := range msgs {
				if err := b.enqueue(ctx, &envs[i], m); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

// enqueue writes one message: its queue row, its body, its history record
// and EventAccepted. The body's first chunk is read before the row is
// written, so that a message of one chunk (nearly all) takes no UPDATE for
// its size.
func (b *batch) enqueue(ctx context.Context, e *store.Envelope, m *store.NewMessage) error {
	w := b.w
	w.chunker.Start(m.Body)
	defer w.chunker.Stop() // drop the caller's reader
	first, last, err := w.chunker.Next()
	if err != nil {
		return bodyErr(e.ID, err)
	}
	if last {
		e.Size = int64(len(first))
	}
	if err := b.insertMessage(e, last, m.LeaseOwner, m.LeaseUntil); err != nil {
		return err
	}
	if last {
		err = b.insertChunk(e.ID, 0, first, true)
	} else {
		err = b.writeLongBody(ctx, e, first)
	}
	if err != nil {
		return err
	}
	if err := b.insertHistory(engine.QueueRecord(e, m.Subject)); err != nil {
		return err
	}
	return b.insertEvent(&store.Event{ID: e.ID, At: e.Received, Type: store.EventAccepted})
}

// bodyErr is the error of a body that could not be read; it wraps the
// reader's error.
func bodyErr(id string, err error) error {
	return fmt.Errorf("store: enqueue %s: reading the body: %w", id, err)
}

// writeLongBody stores a body of more than one chunk, the first of which
// is read already, then the message's size.
func (b *batch) writeLongBody(ctx context.Context, e *store.Envelope, first []byte) error {
	size, chunks, err := b.writeChunks(ctx, e.ID, first)
	if err != nil {
		return err
	}
	e.Size = size
	return b.execOp("enqueue", `UPDATE messages SET size = ?, chunks = ? WHERE id = ?`, size, chunks, e.ID)
}

// insertMessage writes a message's queue row, leased to owner until until
// when owner is set; its size and chunk count are final when the body is
// one chunk, else set once it is stored.
func (b *batch) insertMessage(e *store.Envelope, oneChunk bool, owner string, until time.Time) error {
	rcpts, err := engine.EncodeRcpts(e.Rcpts)
	if err != nil {
		return err
	}
	var size, chunks int64
	if oneChunk {
		size, chunks = e.Size, 1
	}
	_, err = b.execResult(`INSERT INTO messages (id, account, listener, client, mail_from, mail_params,
		rcpts, pending, size, chunks, header_id, received, expires, next_attempt, attempts,
		last_reply, state, bounce, lease_owner, lease_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Account, e.Listener, e.Client, e.From, encodeStrings(e.MailParams),
		rcpts, engine.PendingCount(e.Rcpts), size, chunks, e.HeaderID, unixNano(e.Received), unixNano(e.Expires),
		unixNano(e.NextAttempt), e.Attempts, e.LastReply, e.State, e.Bounce, owner, leaseUntil(owner, until))
	if isConstraint(err) {
		return fmt.Errorf("%w: %s", engine.ErrDuplicate, e.ID)
	}
	return mapErr("enqueue", err)
}

// leaseUntil is the stored lease end of a new message: none without an
// owner.
func leaseUntil(owner string, until time.Time) int64 {
	if owner == "" {
		return 0
	}
	return unixNano(until)
}

// writeChunks stores a body chunk by chunk, read one at a time into the
// writer's chunker, whose first chunk is read already.
func (b *batch) writeChunks(ctx context.Context, id string, first []byte) (size, chunks int64, err error) {
	chunk, last := first, false
	for seq := int64(0); ; seq++ {
		if seq > 0 {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			if chunk, last, err = b.w.chunker.Next(); err != nil {
				return 0, 0, bodyErr(id, err)
			}
		}
		if err := b.insertChunk(id, seq, chunk, last); err != nil {
			return 0, 0, err
		}
		size += int64(len(chunk))
		if last {
			return size, seq + 1, nil
		}
	}
}

func (b *batch) insertChunk(id string, seq int64, plain []byte, last bool) error {
	var keyID any
	data := plain
	if b.key != nil {
		var err error
		if data, err = b.w.sealer.Seal(b.key, id, seq, last, plain); err != nil {
			return err
		}
		keyID = b.key.ID
	}
	if data == nil {
		data = []byte{}
	}
	return b.execOp("enqueue", `INSERT INTO chunks (msg_id, seq, key_id, data) VALUES (?, ?, ?, ?)`, id, seq, keyID, data)
}
