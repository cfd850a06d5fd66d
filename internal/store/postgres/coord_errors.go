package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// dbError is err of a call that was doing what, for its caller: failures
// that mean the database cannot be reached or cannot take the call now
// wrap store.ErrUnavailable (the caller falls back or tries later), and
// the text never holds a password the pool knows. nil stays nil.
func (c *Coordinator) dbError(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	text := c.scrub(err.Error())
	clean := text == err.Error()
	switch {
	case !unreachable(ctx, err):
		if clean {
			return fmt.Errorf("postgres coordinator: %s: %w", what, err)
		}
		return fmt.Errorf("postgres coordinator: %s: %s", what, text)
	case clean:
		return fmt.Errorf("%w: postgres coordinator: %s: %w", store.ErrUnavailable, what, err)
	default:
		return fmt.Errorf("%w: postgres coordinator: %s: %s", store.ErrUnavailable, what, text)
	}
}

// unreachable tells the failures of the database (no connection, a lost
// one, a server shutting down, out of resources, read-only after a
// failover, too slow for the caller's deadline) from refusals of the call
// itself and from the caller giving up.
func unreachable(ctx context.Context, err error) bool {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return unavailableCode(pgErr.Code)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, puddle.ErrClosedPool) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}

// unavailableCode reports whether a server's SQLSTATE means that the
// database cannot take the call now (PostgreSQL manual, appendix A
// "Error Codes"): connection exceptions (08), insufficient resources
// (53: disk full, out of memory, too many connections), operator
// intervention (57: shutdown, statement timeout), system errors (58:
// I/O), a read-only transaction (25006: a standby, during a failover)
// and a deadlock or serialization failure (40: try again).
func unavailableCode(code string) bool {
	if code == "25006" {
		return true
	}
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "08", "40", "53", "57", "58":
		return true
	}
	return false
}
