package postgres

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// testDB is a database of the test binary's PostgreSQL server in which
// each store gets a schema of its own (the first of its search_path):
// creating a schema takes a millisecond, a database a quarter second.
type testDB struct {
	srv   *testutil.PostgresServer
	dsn   string
	admin *pgx.Conn
	next  atomic.Int64
}

// newTestDB creates a database for the test and its subtests.
func newTestDB(t *testing.T) *testDB {
	t.Helper()
	srv, dsn := testutil.Postgres(t)
	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return &testDB{srv: srv, dsn: dsn, admin: admin}
}

// store returns the DSN of a new, empty schema, dropped when t ends.
func (db *testDB) store(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("store_%d", db.next.Add(1))
	db.exec(t, "CREATE SCHEMA "+name)
	t.Cleanup(func() { db.exec(t, "DROP SCHEMA "+name+" CASCADE") })
	return withParam(db.dsn, "search_path", name)
}

// exec runs admin SQL as the superuser.
func (db *testDB) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := db.admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// withParam adds a parameter to a DSN (a URI).
func withParam(dsn, name, value string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}
