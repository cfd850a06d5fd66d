package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// switchToWAL puts the database in WAL mode. The mode is recorded in the
// database file (https://www.sqlite.org/wal.html#persistence_of_wal_mode),
// so every later connection, of this process or another, opens in it.
//
// Switching a new database writes its first page in rollback-journal
// mode, and there SQLite answers a connection that holds a read lock and
// asks for the write lock another one holds with SQLITE_BUSY at once,
// without its busy handler: the two might otherwise wait for each other
// (https://www.sqlite.org/c3ref/busy_handler.html). Two processes opening
// a new store together are such a pair, so the switch is tried again up
// to the busy timeout; by then the other one has usually made it, and
// nothing is left to do.
func switchToWAL(ctx context.Context, db *sql.DB) error {
	err := retryBusy(ctx, func() error {
		var mode string
		return db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
	})
	return mapErr("switching to WAL", err)
}

// retryBusy calls try until it returns anything but SQLITE_BUSY, for up
// to the busy timeout or until ctx ends: for the locks SQLite does not
// wait for itself.
func retryBusy(ctx context.Context, try func() error) error {
	return retryWhile(ctx, busyTimeoutMillis*time.Millisecond, isBusy, try)
}

// retryWhile calls try until it returns an error again does not accept,
// for up to patience or until ctx ends, pausing between attempts from
// 100 µs, doubling, up to beginPollMax.
func retryWhile(ctx context.Context, patience time.Duration, again func(error) bool, try func() error) error {
	deadline := time.Now().Add(patience)
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, beginPollMax) {
		err := try()
		if !again(err) || time.Now().After(deadline) {
			return err
		}
		if err := sleepCtx(ctx, pause); err != nil {
			return err
		}
	}
}

// sleepCtx sleeps for d or until ctx ends, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
