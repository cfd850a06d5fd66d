package sqlite

import (
	"context"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// mapErr classifies a database error: the store's own errors and context
// errors pass through; a constraint violation is the caller's mistake;
// anything else (disk full, I/O error, locked, closed) means the store
// cannot take writes now: store.ErrUnavailable, wrapping the cause. SQLite
// error texts name tables and columns, never values.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrLeaseLost),
		errors.Is(err, store.ErrUnavailable), errors.Is(err, engine.ErrDuplicate),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case isConstraint(err):
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", store.ErrUnavailable, op, err)
}

// readErr is mapErr for a read made under ctx: a cancelled context
// interrupts SQLite, and the caller should see why.
func readErr(ctx context.Context, op string, err error) error {
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return mapErr(op, err)
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

func isConstraint(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}
