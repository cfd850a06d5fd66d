package sqlite

import (
	"context"
	"fmt"
	"io"
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
	rows := make([]*newRows, len(msgs))
	for i, m := range msgs {
		r, err := encodeNew(m)
		if err != nil {
			return err
		}
		rows[i] = r
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
				if err := b.enqueue(ctx, rows[i], m.Body); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

// newRows are the rows of a new message, their arguments encoded (JSON,
// times) by the caller of Enqueue: the writer runs every commit one after
// the other, so work done before it reaches the writer does not hold the
// other messages back. What depends on the body, read in the writer, is
// set there (setBody).
type newRows struct {
	env     store.Envelope
	message []any // insertMessageQuery's arguments
	history []any // insertHistory's (historyArgs)
}

// The arguments the writer sets: their positions in insertMessageQuery
// and historyArgs.
const (
	messageSizeArg   = 8
	messageChunksArg = 9
	messageKeyArg    = 20
	historySizeArg   = 7
)

const insertMessageQuery = `INSERT INTO messages (id, account, listener, client, mail_from, mail_params,
	rcpts, pending, size, chunks, header_id, received, expires, next_attempt, attempts,
	last_reply, state, bounce, lease_owner, lease_until, body_key)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// encodeNew checks m and encodes its rows: its queue row, leased to
// m.LeaseOwner until m.LeaseUntil when that is set, and its history
// record.
func encodeNew(m *store.NewMessage) (*newRows, error) {
	e, err := engine.NormalizeNew(m)
	if err != nil {
		return nil, err
	}
	rcpts, err := engine.EncodeRcpts(e.Rcpts)
	if err != nil {
		return nil, err
	}
	return &newRows{
		env: e,
		message: []any{e.ID, e.Account, e.Listener, e.Client, e.From, encodeStrings(e.MailParams),
			rcpts, engine.PendingCount(e.Rcpts), int64(0), int64(0), e.HeaderID, unixNano(e.Received), unixNano(e.Expires),
			unixNano(e.NextAttempt), e.Attempts, e.LastReply, e.State, e.Bounce, m.LeaseOwner, leaseUntil(m.LeaseOwner, m.LeaseUntil),
			int64(0)},
		history: historyArgs(engine.QueueRecord(&e, m.Subject)),
	}, nil
}

// setBody records the size of the body and its number of chunks.
func (r *newRows) setBody(size, chunks int64) {
	r.env.Size = size
	r.message[messageSizeArg], r.message[messageChunksArg] = size, chunks
	r.history[historySizeArg] = size
}

// enqueue writes one message: its queue row, its body, its history record
// and EventAccepted. The body's first chunk is read before the row is
// written, so that a message of one chunk (nearly all) takes no UPDATE for
// its size.
func (b *batch) enqueue(ctx context.Context, r *newRows, body io.Reader) error {
	w, id := b.w, r.env.ID
	w.chunker.Start(body)
	defer w.chunker.Stop() // drop the caller's reader
	first, last, err := w.chunker.Next()
	if err != nil {
		return bodyErr(id, err)
	}
	if last {
		r.setBody(int64(len(first)), 1)
	} else {
		r.setBody(0, 0) // set once the body is stored
	}
	r.message[messageKeyArg] = b.bodyKey()
	if err := b.insertMessage(r); err != nil {
		return err
	}
	if last {
		err = b.insertChunk(id, 0, first, true)
	} else {
		err = b.writeLongBody(ctx, r, first)
	}
	if err != nil {
		return err
	}
	if err := b.insertHistory(id, r.history); err != nil {
		return err
	}
	return b.insertFirstEvent(&store.Event{ID: id, At: r.env.Received, Type: store.EventAccepted})
}

// bodyErr is the error of a body that could not be read; it wraps the
// reader's error.
func bodyErr(id string, err error) error {
	return fmt.Errorf("store: enqueue %s: reading the body: %w", id, err)
}

// writeLongBody stores a body of more than one chunk, the first of which
// is read already, then the message's size.
func (b *batch) writeLongBody(ctx context.Context, r *newRows, first []byte) error {
	size, chunks, err := b.writeChunks(ctx, r.env.ID, first)
	if err != nil {
		return err
	}
	r.setBody(size, chunks)
	return b.execOp("enqueue", `UPDATE messages SET size = ?, chunks = ? WHERE id = ?`, size, chunks, r.env.ID)
}

// insertMessage writes a message's queue row.
func (b *batch) insertMessage(r *newRows) error {
	_, err := b.execResult(insertMessageQuery, r.message...)
	if isConstraint(err) {
		return fmt.Errorf("%w: %s", engine.ErrDuplicate, r.env.ID)
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

// bodyKey is the ID of the data key the batch seals bodies with, 0 when
// it stores them in clear.
func (b *batch) bodyKey() int64 {
	if b.key == nil {
		return 0
	}
	return b.key.ID
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
