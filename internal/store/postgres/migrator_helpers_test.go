package postgres

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// insertOldHistorySQL records a direct-mode message, as a relay of any
// schema version does; $1 is its ID.
const insertOldHistorySQL = `INSERT INTO history (id, mode, listener, client, account, mail_from, rcpts, size, header_id, received, state, updated)
	VALUES ($1, 'direct', 'l', 'c', 'a@example.com', '<a@example.com>', '{"<b@example.net>"}', 1, '', now(), 'sent', now())`

// unmigrated returns a store on dsn that Open did not migrate, for a
// migrator the test sets up, and its log.
func unmigrated(t *testing.T, dsn string) (*Store, *testutil.LogBuffer) {
	t.Helper()
	logs := new(testutil.LogBuffer)
	opts := Options{Logger: logs.Logger(t)}
	s := newStore(opts)
	pool, err := s.newPool(t.Context(), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.pool = pool
	t.Cleanup(pool.Close)
	return s, logs
}

// quickMigrator is a migrator that gives up waiting for a lock after 200
// ms, and tries again 20 ms later (doubled each time), many times.
func quickMigrator(s *Store) *migrator {
	m := newMigrator(s)
	m.lockTimeout, m.backoff, m.lockPoll, m.attempts = 200*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond, 12
	return m
}

// openInBackground opens a store on dsn (migrating it) and reports how
// that ended; a store that opened is closed.
func openInBackground(ctx context.Context, t *testing.T, dsn string) <-chan error {
	t.Helper()
	opts := Options{Logger: new(testutil.LogBuffer).Logger(t)}
	done := make(chan error, 1)
	go func() {
		s, err := Open(ctx, dsn, opts)
		if err == nil {
			err = s.Close()
		}
		done <- err
	}()
	return done
}

// holdInsert opens a transaction that has inserted a history record and
// returns it, open: an instance in the middle of recording history.
func holdInsert(t *testing.T, dsn string) pgx.Tx {
	t.Helper()
	return holdTx(t, dsn, insertOldHistorySQL, "held")
}

// holdRead opens a transaction that has read the history and returns it,
// open: a long report on the history.
func holdRead(t *testing.T, dsn string) pgx.Tx {
	t.Helper()
	return holdTx(t, dsn, `SELECT count(*) FROM history`)
}

func holdTx(t *testing.T, dsn, sql string, args ...any) pgx.Tx {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
		t.Fatal(err)
	}
	return tx
}

// otherInstance is a connection of another instance whose statements
// fail after waiting 2 seconds for a lock, rather than wait on.
func otherInstance(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), withParam(dsn, "lock_timeout", "2000"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// awaitLockWait waits until a backend of application app runs a
// statement LIKE pattern and waits for a lock.
func awaitLockWait(t *testing.T, db *testDB, app, pattern string) {
	t.Helper()
	awaitCount(t, db, "waiting for a lock: "+pattern, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND state = 'active' AND wait_event_type = 'Lock' AND query LIKE $2`, app, pattern)
}

// awaitNoBackend waits until no backend of application app is left.
func awaitNoBackend(t *testing.T, db *testDB, app string) {
	t.Helper()
	awaitCount(t, db, "no backend", `SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = $1`, app)
}

// awaitCount waits, for at most 10 seconds, until query counts one or
// more (or is true).
func awaitCount(t *testing.T, db *testDB, what, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := db.admin.QueryRow(t.Context(), "SELECT ("+query+")::int", args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 seconds", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitLog waits, for at most 10 seconds, until the log holds text n
// times.
func awaitLog(t *testing.T, logs *testutil.LogBuffer, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say %q %d times:\n%s", text, n, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// schemaQualifier is the schema before a table's name in an index's
// definition.
var schemaQualifier = regexp.MustCompile(`ON \w+\.`)

// historyIndexes returns the definition of each index of the history by
// name, ending in " INVALID" for an invalid one.
func historyIndexes(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass('history')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, def string
		var valid bool
		if err := rows.Scan(&name, &def, &valid); err != nil {
			t.Fatal(err)
		}
		out[name] = schemaQualifier.ReplaceAllString(def, "ON ")
		if !valid {
			out[name] += " INVALID"
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// indexOID is the object ID of an index (0: none).
func indexOID(t *testing.T, pool *pgxpool.Pool, name string) uint32 {
	t.Helper()
	var oid uint32
	if err := pool.QueryRow(t.Context(), `SELECT coalesce(to_regclass($1)::oid, 0)`, name).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	return oid
}

// wantVersions checks that schema_version records each of ms once.
func wantVersions(t *testing.T, pool *pgxpool.Pool, ms []engine.Migration) {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT name FROM schema_version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range ms {
		want = append(want, m.Name)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("schema_version holds %v, want %v", got, want)
	}
}
