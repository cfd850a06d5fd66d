package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// A search whose context ends is stopped on the server too, not only
// abandoned by the client, so that a search the console gave up on does
// not go on reading the history: pgx sends the server a cancel request
// and closes the connection, which the pool replaces. Here the search
// waits for a lock another session holds on the history, so that it is
// still running on the server at its deadline whatever the machine's
// speed.
func TestSearchStopsOnTheServer(t *testing.T) {
	db := newTestDB(t)
	dsn := db.store(t)
	s := openTest(t, dsn, Options{})
	ctx := t.Context()
	pid := onlyConnection(t, s)

	locker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rollback(tx)
	if _, err := tx.Exec(ctx, `LOCK TABLE history IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Search(sctx, store.HistoryQuery{Rcpt: "nobody"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Search past its deadline: %v, want context.DeadlineExceeded", err)
	}
	t.Logf("Search returned %v after its start", time.Since(start))
	// While the lock is still held, the search's backend no longer waits
	// for it.
	awaitBackendStopped(t, db, pid)
	rollback(tx)

	if recs, err := s.Search(ctx, store.HistoryQuery{}); err != nil || len(recs) != 0 {
		t.Fatalf("Search after the deadline: %v, %v", recs, err)
	}
}

// onlyConnection makes s's pool hold exactly one connection, idle, and
// returns its backend's process ID.
func onlyConnection(t *testing.T, s *Store) uint32 {
	t.Helper()
	c, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Conn().PgConn().PID()
	c.Release()
	if n := s.pool.Stat().TotalConns(); n != 1 {
		t.Fatalf("the pool has %d connections, want 1", n)
	}
	return pid
}

// awaitBackendStopped waits, for at most 5 seconds, until the backend
// pid runs no statement: idle, or gone.
func awaitBackendStopped(t *testing.T, db *testDB, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var state, query string
		err := db.admin.QueryRow(t.Context(), `SELECT coalesce(state, ''), query FROM pg_stat_activity WHERE pid = $1`, int64(pid)).Scan(&state, &query)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && state != "active" {
			return
		}
		if err != nil {
			t.Fatalf("backend %d: %v", pid, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d still runs %.60q", pid, query)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
