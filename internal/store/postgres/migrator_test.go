package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// wantHistoryIndexes are the history's indexes once migrated, each
// valid (historyIndexes).
var wantHistoryIndexes = map[string]string{
	"history_pkey":      "CREATE UNIQUE INDEX history_pkey ON history USING btree (id)",
	"history_received":  "CREATE INDEX history_received ON history USING btree (received, id)",
	"history_header_id": "CREATE INDEX history_header_id ON history USING btree (header_id) WHERE (header_id <> ''::text)",
}

// unreleased0003 is what the first 0003_history_search.sql of a
// development build did beyond today's: it rebuilt the history's indexes
// in its transaction, with the writers stopped meanwhile.
const unreleased0003 = `
DROP INDEX history_received;
CREATE INDEX history_received ON history (received, id);
DROP INDEX history_from;
DROP INDEX history_rcpts;`

// The search's indexes are the same whatever the database went through:
// empty, at version 2 (before the search), or migrated by a development
// build's first 0003, which had rebuilt history_received already: then
// it is kept, not built again.
func TestHistoryIndexesMigrated(t *testing.T) {
	ms := allMigrations(t)
	unreleased := slices.Clone(ms[:4])
	unreleased[2].SQL += unreleased0003
	db := newTestDB(t)
	cases := []struct {
		name   string
		before []engine.Migration
		kept   bool // history_received is the one there before
	}{
		{"empty database", nil, false},
		{"before the search", ms[:2], false},
		{"the unreleased 0003", unreleased[:3], true},
		{"the unreleased 0003 and 0004", unreleased, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dsn := db.store(t)
			var before uint32
			if tc.before != nil {
				migrateWith(t, dsn, tc.before)
				pool := newTestPool(t, dsn)
				if _, err := pool.Exec(t.Context(), insertOldHistorySQL, "old1"); err != nil {
					t.Fatal(err)
				}
				before = indexOID(t, pool, "history_received")
			}
			s := openTest(t, dsn, Options{})
			if diff := cmp.Diff(wantHistoryIndexes, historyIndexes(t, s.pool)); diff != "" {
				t.Errorf("history's indexes (-want +got):\n%s", diff)
			}
			if after := indexOID(t, s.pool, "history_received"); tc.kept != (after == before) {
				t.Errorf("history_received was %d, is %d: kept = %v, want %v", before, after, after == before, tc.kept)
			}
			wantVersions(t, s.pool, ms)
			if tc.before != nil {
				recs, err := s.Search(t.Context(), store.HistoryQuery{Rcpt: "B@EXAMPLE.NET"})
				if err != nil || len(recs) != 1 || recs[0].ID != "old1" {
					t.Errorf("Search after the migration = %v, %v", recs, err)
				}
			}
		})
	}
}

// An index build that was interrupted (here the relay starting gave up
// while the build waited for a transaction older than it) leaves an
// invalid index behind; the next start drops it and builds it again.
func TestInterruptedIndexBuildIsRebuilt(t *testing.T) {
	db, dsn := storeAt(t, 4)
	held := holdInsert(t, dsn)

	ctx, cancel := context.WithCancel(t.Context())
	done := openInBackground(ctx, t, withParam(dsn, "application_name", "interrupted"))
	awaitLockWait(t, db, "interrupted", "CREATE INDEX CONCURRENTLY%")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Open, cancelled during the index build: %v, want context.Canceled", err)
	}
	awaitNoBackend(t, db, "interrupted")
	left := historyIndexes(t, newTestPool(t, dsn))
	if !strings.HasSuffix(left["history_received"], " INVALID") {
		t.Fatalf("after the interruption, history_received is %q, want an invalid index", left["history_received"])
	}
	rollback(held)

	logs := new(testutil.LogBuffer)
	s := openTest(t, dsn, Options{Logger: logs.Logger(t)})
	if diff := cmp.Diff(wantHistoryIndexes, historyIndexes(t, s.pool)); diff != "" {
		t.Errorf("history's indexes (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "invalid index: dropping it") {
		t.Errorf("the log does not say the invalid index was dropped:\n%s", logs)
	}
	wantVersions(t, s.pool, allMigrations(t))
}

// While the index step runs, instances of the previous version keep
// recording history and reading it: CREATE INDEX CONCURRENTLY waits for
// the transactions older than it (held here), and a write that starts
// meanwhile does not wait for it. The database's statement_timeout (100
// ms here) does not cut the build short, and the log says it still runs.
func TestIndexStepLetsOthersWrite(t *testing.T) {
	db, dsn := storeAt(t, 4)
	held := holdInsert(t, dsn)

	s, logs := unmigrated(t, withParam(withParam(dsn, "application_name", "indexing"), "statement_timeout", "100"))
	m := quickMigrator(s)
	m.progress = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- m.run(t.Context(), allMigrations(t)) }()
	awaitLockWait(t, db, "indexing", "CREATE INDEX CONCURRENTLY%")
	awaitLog(t, logs, "still running", 2)

	other := otherInstance(t, dsn)
	for _, id := range []string{"during1", "during2"} {
		if _, err := other.Exec(t.Context(), insertOldHistorySQL, id); err != nil {
			t.Fatalf("an insert into the history during the index build: %v", err)
		}
	}
	var n int
	if err := other.QueryRow(t.Context(), `SELECT count(*) FROM history WHERE received > now() - interval '1 hour'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("a read of the history during the index build: %d records, %v", n, err)
	}
	select {
	case err := <-done:
		t.Fatalf("the migration ended while a transaction older than its index build was open: %v", err)
	default:
	}
	if err := held.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Open: %v", err)
	}
	pool := newTestPool(t, dsn)
	if diff := cmp.Diff(wantHistoryIndexes, historyIndexes(t, pool)); diff != "" {
		t.Errorf("history's indexes (-want +got):\n%s", diff)
	}
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM history`).Scan(&n); err != nil || n != 3 {
		t.Errorf("the history holds %d records, %v; want 3", n, err)
	}
}

// ADD COLUMN needs a lock that stops every reader and writer of the
// table. While a long transaction holds a lock on the history, the step
// gives up after its lock_timeout and tries again, so that writers queue
// behind it for at most that long each time; once the transaction ends,
// the step is applied.
func TestAddColumnGivesWayToOthers(t *testing.T) {
	db, dsn := storeAt(t, 2)
	reading := holdRead(t, dsn)

	s, logs := unmigrated(t, withParam(dsn, "application_name", "altering"))
	m := quickMigrator(s)
	done := make(chan error, 1)
	go func() { done <- m.run(t.Context(), allMigrations(t)) }()
	awaitLockWait(t, db, "altering", "%ALTER TABLE history ADD COLUMN%")

	other := otherInstance(t, dsn)
	for _, id := range []string{"w1", "w2", "w3"} {
		start := time.Now()
		if _, err := other.Exec(t.Context(), insertOldHistorySQL, id); err != nil {
			t.Fatalf("an insert into the history while the migration waits: %v", err)
		}
		t.Logf("insert %s took %v", id, time.Since(start))
	}
	awaitLog(t, logs, "trying again", 2)
	if err := reading.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migration: %v", err)
	}
	wantVersions(t, s.pool, allMigrations(t))
	if _, err := s.pool.Exec(t.Context(), `SELECT subject FROM history`); err != nil {
		t.Errorf("the history has no subject: %v", err)
	}
}

// A lock held through every attempt fails the migration, saying why, and
// leaves the step unapplied.
func TestAddColumnGivesUp(t *testing.T) {
	_, dsn := storeAt(t, 2)
	reading := holdRead(t, dsn)
	defer rollback(reading)

	s, _ := unmigrated(t, dsn)
	m := quickMigrator(s)
	m.attempts, m.lockTimeout = 3, 50*time.Millisecond
	err := m.run(t.Context(), allMigrations(t))
	if !isLockTimeout(err) || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "3 times") {
		t.Fatalf("migration under a lock held throughout: %v, want a lock timeout after 3 attempts", err)
	}
	var version int
	if err := s.pool.QueryRow(t.Context(), `SELECT max(version) FROM schema_version`).Scan(&version); err != nil || version != 2 {
		t.Errorf("schema version %d, %v; want 2", version, err)
	}
}

// An instance that starts while another migrates waits for it, until its
// context ends.
func TestMigrationWaitEndsWithTheContext(t *testing.T) {
	db := newTestDB(t)
	dsn := db.store(t)
	holder, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		t.Fatal(err)
	}
	logs := new(testutil.LogBuffer)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := Open(ctx, dsn, Options{Logger: logs.Logger(t)})
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("Open while another instance migrates: %v after %v, want context.DeadlineExceeded at once", err, time.Since(start))
	}
	if !strings.Contains(logs.String(), "another instance is migrating") {
		t.Errorf("the log does not say why the start waits:\n%s", logs)
	}
}

// Every statement of a step without a transaction may run again after an
// interruption: index builds and drops are CONCURRENTLY and IF [NOT]
// EXISTS.
func TestNoTransactionStepsAreRepeatable(t *testing.T) {
	for _, m := range allMigrations(t) {
		if !m.NoTransaction {
			continue
		}
		stmts, err := splitStatements(m.SQL)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		for _, stmt := range stmts {
			upper := strings.ToUpper(stmt)
			isIndex := strings.HasPrefix(upper, "CREATE INDEX") || strings.HasPrefix(upper, "CREATE UNIQUE INDEX") || strings.HasPrefix(upper, "DROP INDEX")
			if isIndex && (!concurrently.MatchString(stmt) || !strings.Contains(upper, " IF ")) {
				t.Errorf("%s: %q is not CONCURRENTLY and IF [NOT] EXISTS", m.Name, stmt)
			}
		}
	}
}

func allMigrations(t *testing.T) []engine.Migration {
	t.Helper()
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// storeAt returns a new database and the DSN of a store in it migrated by
// hand to version n.
func storeAt(t *testing.T, n int) (*testDB, string) {
	t.Helper()
	db := newTestDB(t)
	dsn := db.store(t)
	migrateWith(t, dsn, allMigrations(t)[:n])
	return db, dsn
}
