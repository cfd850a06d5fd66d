package postgres

import (
	"bytes"
	"context"
	"fmt"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Enqueue stores the messages in one commit shared with the other writes
// waiting at the time; it returns once that commit is durable. The
// messages of one call are stored all or none. A call with a message
// declared (Envelope.Size) larger than a chunk commits on its own
// (runSolo). The stored size is what was read from the body.
func (s *Store) Enqueue(ctx context.Context, msgs ...*store.NewMessage) error {
	if err := s.readable(); err != nil {
		return err
	}
	envs := make([]store.Envelope, len(msgs))
	large := false
	for i, m := range msgs {
		e, err := engine.NormalizeNew(m)
		if err != nil {
			return err
		}
		if err := checkEnvelope(&e); err != nil {
			return err
		}
		envs[i] = e
		large = large || m.Size > engine.ChunkSize
	}
	if len(msgs) == 0 {
		return nil
	}
	r := &request{msgs: msgs, envs: envs}
	if large {
		return s.runSolo(ctx, r)
	}
	return s.submit(ctx, r)
}

// enqueue queues request i's messages, reading their bodies.
func (p *pipe) enqueue(i int, r *request) error {
	for j, m := range r.msgs {
		if err := p.enqueueOne(i, r, &r.envs[j], m); err != nil || p.results[i] != nil {
			return err
		}
	}
	return nil
}

// enqueueOne queues one message: its queue row, its body, its history
// record and EventAccepted. A body of one chunk (nearly all) is held until
// the pipeline goes; a longer one is streamed at once (streamBody).
func (p *pipe) enqueueOne(i int, r *request, e *store.Envelope, m *store.NewMessage) error {
	c := &p.bufs.chunker
	c.Start(m.Body)
	defer c.Stop() // drop the caller's reader
	first, last, err := c.Next()
	if err != nil {
		return p.abandon(i, bodyErr(e.ID, err))
	}
	if !last {
		return p.streamBody(i, r, e, m, first)
	}
	data, err := p.seal(e.ID, 0, true, first)
	if err != nil {
		return p.abandon(i, err)
	}
	e.Size = int64(len(first))
	p.insertWhole(i, e, m, bytes.Clone(data)) // the buffers serve the next message
	return nil
}

// enqueueSQL stores a message whose body is one chunk: its queue row,
// the chunk, its history record and EventAccepted, in one statement (a
// quarter of the work a statement each takes the server).
const enqueueSQL = `WITH message AS (` + insertMessageSQL + `),
	body AS (INSERT INTO chunks (msg_id, seq, key_id, data) VALUES ($1, 0, $21, $22)),
	record AS (INSERT INTO history (` + historyColumns + `)
		VALUES ($1, 'queue', $3, $4, $2, $5, $23, $9, $11, $24, $12, $17, $12))
	INSERT INTO events (msg_id, at, type, rcpt, reply) VALUES ($1, $12, 'accepted', '', '')`

func (p *pipe) insertWhole(i int, e *store.Envelope, m *store.NewMessage, data []byte) {
	args := p.messageArgs(e, m, 1)
	var keyID any
	if p.key != nil {
		keyID = p.key.ID
	}
	rec := engine.QueueRecord(e, cleanText(m.Subject))
	p.queue(stmt{req: i, sql: enqueueSQL, fail: p.duplicate(e.ID), args: append(args, keyID, data, rec.Rcpts, rec.Subject)})
	p.bytes += len(data)
}

// streamBody stores a body of more than one chunk, the first of which is
// read, one chunk per round trip, so that only one is in memory; then the
// message's size.
func (p *pipe) streamBody(i int, r *request, e *store.Envelope, m *store.NewMessage, first []byte) error {
	p.insertMessage(i, e, m, 0)
	chunk, last := first, false
	var size int64
	for seq := int64(0); ; seq++ {
		if seq > 0 {
			if err := r.Context().Err(); err != nil {
				return p.abandon(i, err)
			}
			var err error
			if chunk, last, err = p.bufs.chunker.Next(); err != nil {
				return p.abandon(i, bodyErr(e.ID, err))
			}
		}
		data, err := p.seal(e.ID, seq, last, chunk)
		if err != nil {
			return p.abandon(i, err)
		}
		p.insertChunk(i, e.ID, seq, data)
		if err := p.flush(); err != nil || p.results[i] != nil {
			return err
		}
		size += int64(len(chunk))
		e.Size = size
		if last {
			p.queue(stmt{req: i, sql: `UPDATE messages SET size = $1, chunks = $2 WHERE id = $3`,
				args: []any{size, seq + 1, e.ID}})
			p.insertAccepted(i, e, m.Subject)
			return nil
		}
	}
}

// bodyErr is the error of a body that could not be read; it wraps the
// reader's error.
func bodyErr(id string, err error) error {
	return fmt.Errorf("store: enqueue %s: reading the body: %w", id, err)
}

// seal returns a chunk as stored: sealed with the batch's key, if any.
// The result is valid until the next call.
func (p *pipe) seal(id string, seq int64, last bool, plain []byte) ([]byte, error) {
	if p.key == nil {
		return plain, nil
	}
	return p.bufs.sealer.Seal(p.key, id, seq, last, plain)
}

const insertMessageSQL = `INSERT INTO messages (id, account, listener, client, mail_from, mail_params,
	rcpts, pending, size, chunks, header_id, received, expires, next_attempt, attempts,
	last_reply, state, bounce, lease_owner, lease_until)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`

// insertMessage queues a message's queue row, leased when the message
// comes with a lease; chunks is 0 until a streamed body is stored.
func (p *pipe) insertMessage(i int, e *store.Envelope, m *store.NewMessage, chunks int64) {
	p.queue(stmt{req: i, sql: insertMessageSQL, fail: p.duplicate(e.ID), args: p.messageArgs(e, m, chunks)})
}

// messageArgs are the arguments of insertMessageSQL.
func (p *pipe) messageArgs(e *store.Envelope, m *store.NewMessage, chunks int64) []any {
	rcpts, err := engine.EncodeRcpts(e.Rcpts)
	if err != nil { // a []store.Recipient always marshals
		panic(err)
	}
	var leaseUntil any
	if m.LeaseOwner != "" {
		leaseUntil = m.LeaseUntil
	}
	return []any{e.ID, e.Account, e.Listener, e.Client, e.From, textArray(e.MailParams),
		rcpts, engine.PendingCount(e.Rcpts), e.Size, chunks, e.HeaderID, e.Received, e.Expires,
		e.NextAttempt, e.Attempts, e.LastReply, e.State, e.Bounce, m.LeaseOwner, leaseUntil}
}

func (p *pipe) insertChunk(i int, id string, seq int64, data []byte) {
	var keyID any
	if p.key != nil {
		keyID = p.key.ID
	}
	if data == nil {
		data = []byte{}
	}
	p.queue(stmt{req: i, sql: `INSERT INTO chunks (msg_id, seq, key_id, data) VALUES ($1, $2, $3, $4)`,
		args: []any{id, seq, keyID, data}})
	p.bytes += len(data)
}

// insertAccepted queues the history record of a message entering the
// queue and its EventAccepted.
func (p *pipe) insertAccepted(i int, e *store.Envelope, subject string) {
	rec := engine.QueueRecord(e, cleanText(subject))
	p.queue(stmt{req: i, sql: insertHistorySQL, args: historyArgs(rec), fail: p.duplicate(e.ID)})
	p.queue(insertEvent(i, &store.Event{ID: e.ID, At: e.Received, Type: store.EventAccepted}))
}

// duplicate classifies the error of an insert: a duplicate key is an ID
// already stored (engine.ErrDuplicate).
func (p *pipe) duplicate(id string) func(error) error {
	return func(err error) error {
		if isUniqueViolation(err) {
			return fmt.Errorf("%w: %s", engine.ErrDuplicate, id)
		}
		return p.s.mapErr("enqueue", err)
	}
}

// textArray is a list stored as text[], which is never NULL.
func textArray(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}
