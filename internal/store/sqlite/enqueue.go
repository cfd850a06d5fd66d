package sqlite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// chunkSize is the size of a stored body chunk: a large message takes few
// rows, and neither the writer nor a reader holds more than one chunk of
// it in memory.
const chunkSize = 256 << 10

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
		e, err := normalizeNew(m)
		if err != nil {
			return err
		}
		envs[i] = e
	}
	if len(msgs) == 0 {
		return nil
	}
	rewind, rewindable := rewinder(msgs)
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

// rewinder returns a function that rewinds the bodies to where they are
// now, and whether it can: when all of them are io.Seekers (bytes.Reader,
// os.File). A request that can be rewound runs without a savepoint of its
// own (see writer.run).
func rewinder(msgs []*store.NewMessage) (rewind func() bool, ok bool) {
	type mark struct {
		body io.Seeker
		at   int64
	}
	cannot := func() bool { return false }
	var marks []mark
	for _, m := range msgs {
		if m.Body == nil {
			continue
		}
		body, ok := m.Body.(io.Seeker)
		if !ok {
			return cannot, false
		}
		at, err := body.Seek(0, io.SeekCurrent)
		if err != nil {
			return cannot, false
		}
		marks = append(marks, mark{body, at})
	}
	return func() bool {
		for _, mk := range marks {
			if _, err := mk.body.Seek(mk.at, io.SeekStart); err != nil {
				return false
			}
		}
		return true
	}, true
}

// normalizeNew checks a new message and returns its envelope with the
// defaults filled in: state queued, recipients pending, received now.
func normalizeNew(m *store.NewMessage) (store.Envelope, error) {
	if m == nil {
		return store.Envelope{}, errors.New("store: enqueue: nil message")
	}
	e := m.Envelope
	e.Rcpts = append([]store.Recipient(nil), e.Rcpts...)
	switch {
	case e.ID == "":
		return e, errors.New("store: enqueue: message without an ID")
	case e.From == "":
		return e, fmt.Errorf("store: enqueue %s: empty reverse-path", e.ID)
	case len(e.Rcpts) == 0:
		return e, fmt.Errorf("store: enqueue %s: no recipients", e.ID)
	}
	if e.State == "" {
		e.State = store.StateQueued
	}
	if e.State != store.StateQueued && e.State != store.StateHeld {
		return e, fmt.Errorf("store: enqueue %s: state %q is not queued or held", e.ID, e.State)
	}
	if m.LeaseOwner != "" && (m.LeaseUntil.IsZero() || e.State != store.StateQueued) {
		return e, fmt.Errorf("store: enqueue %s: a lease needs an end and a queued message", e.ID)
	}
	for i := range e.Rcpts {
		if err := normalizeRcpt(&e.Rcpts[i]); err != nil {
			return e, fmt.Errorf("store: enqueue %s: %w", e.ID, err)
		}
	}
	if e.Received.IsZero() {
		e.Received = time.Now()
	}
	return e, nil
}

func normalizeRcpt(r *store.Recipient) error {
	if r.Addr == "" {
		return errors.New("empty recipient")
	}
	return normalizeRcptState(&r.State)
}

// normalizeRcptState checks a recipient state; "" means pending.
func normalizeRcptState(state *string) error {
	switch *state {
	case "":
		*state = store.RcptPending
	case store.RcptPending, store.RcptDelivered, store.RcptFailed:
	default:
		return fmt.Errorf("recipient state %q", *state)
	}
	return nil
}

// enqueue writes one message: its queue row, its body, its history record
// and EventAccepted. The body's first chunk is read before the row is
// written, so that a message of one chunk (nearly all) takes no UPDATE for
// its size.
func (b *batch) enqueue(ctx context.Context, e *store.Envelope, m *store.NewMessage) error {
	first, last, err := b.w.readFirstChunk(e.ID, m.Body)
	if err != nil {
		return err
	}
	defer b.w.br.Reset(eofReader{}) // drop the caller's reader
	if last {
		e.Size = int64(first)
	}
	if err := b.insertMessage(e, last, m.LeaseOwner, m.LeaseUntil); err != nil {
		return err
	}
	if last {
		err = b.insertChunk(e.ID, 0, b.w.chunk[:first], true)
	} else {
		err = b.writeLongBody(ctx, e, first)
	}
	if err != nil {
		return err
	}
	if err := b.insertHistory(queueRecord(e)); err != nil {
		return err
	}
	return b.insertEvent(&store.Event{ID: e.ID, At: e.Received, Type: store.EventAccepted})
}

// writeLongBody stores a body of more than one chunk, the first of which
// (first bytes) is in the writer's buffer, then the message's size.
func (b *batch) writeLongBody(ctx context.Context, e *store.Envelope, first int) error {
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
	rcpts, err := encodeRcpts(e.Rcpts)
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
		rcpts, pendingCount(e.Rcpts), size, chunks, e.HeaderID, unixNano(e.Received), unixNano(e.Expires),
		unixNano(e.NextAttempt), e.Attempts, e.LastReply, e.State, e.Bounce, owner, leaseUntil(owner, until))
	if isConstraint(err) {
		return fmt.Errorf("%w: %s", errDuplicate, e.ID)
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

// queueRecord is the history record of a message entering the queue.
func queueRecord(e *store.Envelope) *store.Record {
	addrs := make([]string, len(e.Rcpts))
	for i, r := range e.Rcpts {
		addrs[i] = r.Addr
	}
	return &store.Record{
		ID: e.ID, Mode: "queue", Listener: e.Listener, Client: e.Client, Account: e.Account,
		From: e.From, Rcpts: addrs, Size: e.Size, HeaderID: e.HeaderID,
		Received: e.Received, State: e.State, Updated: e.Received,
	}
}

// readFirstChunk starts reading a body into the writer's buffer and reads
// its first chunk. There is always a first chunk, so that the last one,
// even of an empty body, carries the "last" mark when sealed.
func (w *writer) readFirstChunk(id string, body io.Reader) (n int, last bool, err error) {
	if body == nil {
		body = eofReader{}
	}
	w.readFrom(body)
	n, last, err = w.readChunk()
	if err != nil {
		return 0, false, fmt.Errorf("store: enqueue %s: reading the body: %w", id, err)
	}
	return n, last, nil
}

// writeChunks stores a body chunk by chunk, read one at a time into the
// writer's buffer, which holds the first one (first bytes) already.
func (b *batch) writeChunks(ctx context.Context, id string, first int) (size, chunks int64, err error) {
	w := b.w
	n, last := first, false
	for seq := int64(0); ; seq++ {
		if seq > 0 {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			if n, last, err = w.readChunk(); err != nil {
				return 0, 0, fmt.Errorf("store: enqueue %s: reading the body: %w", id, err)
			}
		}
		if err := b.insertChunk(id, seq, w.chunk[:n], last); err != nil {
			return 0, 0, err
		}
		size += int64(n)
		if last {
			return size, seq + 1, nil
		}
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// readFrom starts reading a body.
func (w *writer) readFrom(body io.Reader) {
	if w.chunk == nil {
		w.chunk = make([]byte, chunkSize)
		w.br = bufio.NewReaderSize(body, 4096)
		return
	}
	w.br.Reset(body)
}

// readChunk fills the chunk buffer and reports whether the body ends
// there (a full chunk peeks one byte ahead).
func (w *writer) readChunk() (n int, last bool, err error) {
	n, err = io.ReadFull(w.br, w.chunk)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return n, true, nil
	case err != nil:
		return 0, false, err
	}
	if _, err := w.br.Peek(1); err == io.EOF {
		return n, true, nil
	} else if err != nil {
		return 0, false, err
	}
	return n, false, nil
}

func (b *batch) insertChunk(id string, seq int64, plain []byte, last bool) error {
	var keyID any
	data := plain
	if b.key != nil {
		var err error
		if data, err = b.w.seal(b.key, id, seq, last, plain); err != nil {
			return fmt.Errorf("%w: sealing: %w", store.ErrUnavailable, err)
		}
		keyID = b.key.id
	}
	if data == nil {
		data = []byte{}
	}
	return b.execOp("enqueue", `INSERT INTO chunks (msg_id, seq, key_id, data) VALUES (?, ?, ?, ?)`, id, seq, keyID, data)
}
