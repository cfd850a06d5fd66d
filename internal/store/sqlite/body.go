package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
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
	var size, chunks int64
	err := s.reads.bodySize.QueryRowContext(ctx, id).Scan(&size, &chunks)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	if err != nil {
		return nil, readErr(ctx, "reading a body", err)
	}
	return engine.NewBodyReader(ctx, id, size, chunks, s.keys, func(ctx context.Context, seq int64, c *engine.StoredChunk) (bool, error) {
		return s.loadChunk(ctx, id, seq, c)
	}), nil
}

// loadChunk reads chunk seq of message id into c.
func (s *Store) loadChunk(ctx context.Context, id string, seq int64, c *engine.StoredChunk) (bool, error) {
	if err := s.readable(); err != nil {
		return false, err
	}
	var keyID sql.NullInt64
	found := false
	rows, err := s.reads.chunk.QueryContext(ctx, id, seq)
	if err != nil {
		return false, readErr(ctx, "reading a body", err)
	}
	defer rows.Close()
	for rows.Next() {
		var data sql.RawBytes
		if err := rows.Scan(&keyID, &c.Wrapped, &data); err != nil {
			return false, readErr(ctx, "reading a body", err)
		}
		c.Data, found = append(c.Data[:0], data...), true
	}
	if err := rows.Err(); err != nil {
		return false, readErr(ctx, "reading a body", err)
	}
	c.Sealed, c.KeyID = keyID.Valid, keyID.Int64
	return found, nil
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
