package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// acquireTimeout bounds the wait for a connection of the pool: when every
// connection is busy for that long, or none can be opened, the store is
// unavailable (store.ErrUnavailable), and a queue listener answers 452
// rather than keep its client waiting.
const acquireTimeout = 30 * time.Second

// rollbackTimeout bounds the ROLLBACK after a failed transaction.
const rollbackTimeout = 5 * time.Second

// acquire takes a connection of the pool.
func (s *Store) acquire(ctx context.Context, op string) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, acquireTimeout)
	defer cancel()
	c, err := s.pool.Acquire(actx)
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: %s: no database connection: %w", store.ErrUnavailable, op, s.clean(err))
}

// withConn runs fn on a connection of the pool, under a deadline when
// ctx has none. fn classifies its own errors (mapErr, readErr).
func (s *Store) withConn(ctx context.Context, op string, fn func(ctx context.Context, c *pgxpool.Conn) error) error {
	if err := s.readable(); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	c, err := s.acquire(ctx, op)
	if err != nil {
		return err
	}
	defer c.Release()
	return fn(ctx, c)
}

// inTx runs fn in a transaction and commits it; fn classifies its own
// errors. A failed transaction is rolled back before its connection goes
// back to the pool.
func (s *Store) inTx(ctx context.Context, op string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return s.withConn(ctx, op, func(ctx context.Context, c *pgxpool.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return s.readErr(ctx, op, err)
		}
		defer rollback(tx)
		if err := fn(ctx, tx); err != nil {
			return err
		}
		return s.readErr(ctx, op, tx.Commit(ctx))
	})
}

// rollback ends a transaction that did not commit (a no-op after Commit).
func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// sendBatch sends the queued statements of b in one round trip and reads
// their results, calling the callbacks they were queued with.
func (s *Store) sendBatch(ctx context.Context, tx pgx.Tx, op string, b *pgx.Batch) error {
	return s.readErr(ctx, op, tx.SendBatch(ctx, b).Close())
}
