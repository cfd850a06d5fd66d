package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Body opens a queued message's body. The reader fetches one chunk at a
// time under ctx, each with a query of its own, so that a slow delivery
// holds neither a connection nor a snapshot. When the message leaves the
// queue while it is read, the next chunk fails with store.ErrNotFound
// instead of the body ending early.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	var size, chunks int64
	err := s.withConn(ctx, "reading a body", func(ctx context.Context, c *pgxpool.Conn) error {
		err := c.QueryRow(ctx, `SELECT size, chunks FROM messages WHERE id = $1`, id).Scan(&size, &chunks)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		return s.readErr(ctx, "reading a body", err)
	})
	if err != nil {
		return nil, err
	}
	return engine.NewBodyReader(ctx, id, size, chunks, s.keys, func(ctx context.Context, seq int64, c *engine.StoredChunk) (bool, error) {
		return s.loadChunk(ctx, id, seq, c)
	}), nil
}

// loadChunk reads chunk seq of message id into c, its data into c's
// buffer.
func (s *Store) loadChunk(ctx context.Context, id string, seq int64, c *engine.StoredChunk) (found bool, err error) {
	err = s.withConn(ctx, "reading a body", func(ctx context.Context, conn *pgxpool.Conn) error {
		var keyID pgtype.Int8
		err := conn.QueryRow(ctx, `SELECT c.key_id, k.wrapped, c.data FROM chunks c
			LEFT JOIN data_keys k ON k.id = c.key_id WHERE c.msg_id = $1 AND c.seq = $2`, id, seq).
			Scan(&keyID, &c.Wrapped, (*chunkData)(c))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return s.readErr(ctx, "reading a body", err)
		}
		found, c.Sealed, c.KeyID = true, keyID.Valid, keyID.Int64
		return nil
	})
	return found, err
}

// chunkData scans a bytea into the chunk's buffer, reused from one chunk
// to the next, where pgx would allocate each anew.
type chunkData engine.StoredChunk

func (d *chunkData) ScanBytes(v []byte) error {
	d.Data = append(d.Data[:0], v...)
	return nil
}
