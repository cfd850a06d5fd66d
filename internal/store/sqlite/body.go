package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Body opens a queued message's body. The reader fetches one chunk at a
// time under ctx, each in a read transaction of its own, so that a slow
// delivery holds no snapshot that would keep WAL checkpoints waiting.
// When the message leaves the queue while it is read, the next chunk
// fails with store.ErrNotFound instead of the body ending early.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	r := &bodyReader{s: s, ctx: ctx, id: id}
	err := s.reads.bodySize.QueryRowContext(ctx, id).Scan(&r.size, &r.chunks)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	if err != nil {
		return nil, readErr(ctx, "reading a body", err)
	}
	return r, nil
}

// bodyReader reads a body chunk by chunk.
type bodyReader struct {
	s      *Store
	ctx    context.Context
	id     string
	size   int64 // bytes the body has
	chunks int64 // chunks it has
	seq    int64 // the next chunk to read
	read   int64 // bytes read so far
	buf    []byte
	rest   []byte // what is left of the current chunk
	ad     []byte
	err    error // sticky
}

func (r *bodyReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.rest, r.err = r.next()
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// next returns the next chunk's plaintext, or io.EOF after the last one.
func (r *bodyReader) next() ([]byte, error) {
	if r.seq == r.chunks {
		if r.read != r.size {
			return nil, fmt.Errorf("%w: %s has %d bytes, want %d", errCorrupt, r.id, r.read, r.size)
		}
		return nil, io.EOF
	}
	if err := r.s.readable(); err != nil {
		return nil, err
	}
	plain, err := r.load(r.seq)
	if err != nil {
		return nil, err
	}
	r.seq++
	r.read += int64(len(plain))
	return plain, nil
}

// load reads chunk seq into the reader's buffer and opens it if sealed.
func (r *bodyReader) load(seq int64) ([]byte, error) {
	var keyID sql.NullInt64
	var wrapped []byte
	found := false
	rows, err := r.s.reads.chunk.QueryContext(r.ctx, r.id, seq)
	if err != nil {
		return nil, readErr(r.ctx, "reading a body", err)
	}
	defer rows.Close()
	for rows.Next() {
		var data sql.RawBytes
		if err := rows.Scan(&keyID, &wrapped, &data); err != nil {
			return nil, readErr(r.ctx, "reading a body", err)
		}
		r.buf, found = append(r.buf[:0], data...), true
	}
	if err := rows.Err(); err != nil {
		return nil, readErr(r.ctx, "reading a body", err)
	}
	if !found {
		return nil, fmt.Errorf("%w: %s left the queue while its body was read", store.ErrNotFound, r.id)
	}
	if !keyID.Valid {
		return r.buf, nil
	}
	return r.open(keyID.Int64, wrapped, seq)
}

func (r *bodyReader) open(keyID int64, wrapped []byte, seq int64) ([]byte, error) {
	if len(wrapped) == 0 {
		return nil, fmt.Errorf("%w: %s: chunk %d refers to a missing key", errCorrupt, r.id, seq)
	}
	aead, err := r.s.keys.get(r.ctx, keyID, wrapped)
	if err != nil {
		return nil, err
	}
	r.ad = chunkAD(r.ad, r.id, seq, seq == r.chunks-1)
	plain, err := openChunk(aead, r.buf, r.ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: chunk %d", err, r.id, seq)
	}
	return plain, nil
}

// Close releases the reader's buffer; later reads fail.
func (r *bodyReader) Close() error {
	r.buf, r.rest = nil, nil
	if r.err == nil || r.err == io.EOF {
		r.err = errors.New("store: body reader closed")
	}
	return nil
}

// readStmts are the hot reads, prepared once: a delivery reads its body
// with them, and parsing each query anew was a fifth of a drain's reads.
// database/sql prepares each on every read connection as it is used.
type readStmts struct {
	bodySize *sql.Stmt
	chunk    *sql.Stmt
}

func (rs *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	var err error
	if rs.bodySize, err = db.PrepareContext(ctx, `SELECT size, chunks FROM messages WHERE id = ?`); err != nil {
		return mapErr("preparing reads", err)
	}
	rs.chunk, err = db.PrepareContext(ctx, `SELECT c.key_id, k.wrapped, c.data FROM chunks c
		LEFT JOIN data_keys k ON k.id = c.key_id WHERE c.msg_id = ? AND c.seq = ?`)
	return mapErr("preparing reads", err)
}

func (rs *readStmts) close() {
	for _, st := range []*sql.Stmt{rs.bodySize, rs.chunk} {
		if st != nil {
			_ = st.Close()
		}
	}
}
