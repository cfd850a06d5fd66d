package testutil

import (
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopSharedPostgres()
	os.Exit(code)
}

// TestPostgres starts the shared server and uses two fresh databases: each
// test gets its own, and SQL errors come back with PostgreSQL's message.
func TestPostgres(t *testing.T) {
	srv, dsn := Postgres(t)
	_, dsn2 := Postgres(t)
	if dsn == dsn2 {
		t.Fatalf("two tests share database %s", dsn)
	}
	db := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	if err := srv.Exec(db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	err := srv.Exec(db, "SELECT nope FROM t")
	if err == nil || !strings.Contains(err.Error(), `column "nope" does not exist`) {
		t.Fatalf("bad SQL: %v", err)
	}
}
