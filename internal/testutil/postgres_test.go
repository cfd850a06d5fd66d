package testutil

import (
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopSharedPostgres()
	StopSharedBrowser()
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

// TestPostgresPasswordAuth: with PasswordAuth a role logs in with its
// password only, while the superuser's Exec still needs none.
func TestPostgresPasswordAuth(t *testing.T) {
	srv, err := StartPostgresServer(PostgresOptions{PasswordAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.Exec("postgres", "CREATE ROLE app LOGIN PASSWORD 'right'"); err != nil {
		t.Fatal(err)
	}
	for password, wantOK := range map[string]bool{"right": true, "wrong": false} {
		_, err := srv.QueryAs("app", password, "postgres", "SELECT 1")
		if wantOK != (err == nil) {
			t.Errorf("app with password %q: %v", password, err)
		}
	}
}
