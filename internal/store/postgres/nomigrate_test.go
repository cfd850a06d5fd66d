package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// migrateTo applies the first n migrations to dsn's schema, as a relay of
// that version would have (schema_version included).
func migrateTo(t *testing.T, db *testDB, dsn string, n int) {
	t.Helper()
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	migrateWith(t, dsn, ms[:n])
}

// migrateWith applies steps to dsn's schema by hand, schema_version
// included.
func migrateWith(t *testing.T, dsn string, steps []engine.Migration) {
	t.Helper()
	conn := newTestPool(t, dsn)
	_, err := conn.Exec(t.Context(), `CREATE TABLE schema_version (
		version integer NOT NULL PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range steps {
		applyByHand(t, conn, m)
		if _, err := conn.Exec(t.Context(), `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// applyByHand runs a migration's SQL as it is, or statement by statement
// for a NoTransaction step.
func applyByHand(t *testing.T, conn *pgxpool.Pool, m engine.Migration) {
	t.Helper()
	stmts := []string{m.SQL}
	if m.NoTransaction {
		var err error
		if stmts, err = splitStatements(m.SQL); err != nil {
			t.Fatal(err)
		}
	}
	for _, stmt := range stmts {
		if _, err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
}

// schemaState is the schema's version (-1: no schema_version table) and
// its number of tables and functions, to tell that nothing changed.
func schemaState(t *testing.T, dsn string) (version, objects int) {
	t.Helper()
	conn := newTestPool(t, dsn)
	err := conn.QueryRow(t.Context(), `SELECT
		CASE WHEN to_regclass('schema_version') IS NULL THEN -1 ELSE 0 END,
		(SELECT count(*) FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace)
		+ (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace)`).Scan(&version, &objects)
	if err != nil {
		t.Fatal(err)
	}
	if version == 0 {
		if err := conn.QueryRow(t.Context(), `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&version); err != nil {
			t.Fatal(err)
		}
	}
	return version, objects
}

// Open with NoMigrate (`oauthrelay check`, `oauthrelay queue`) reads the
// schema's version and changes nothing: an older schema (or none) is an
// error that tells the operator to start the relay, which migrates; a
// newer one is refused as by Open; the current one opens.
func TestOpenNoMigrateChangesNothing(t *testing.T) {
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	db := newTestDB(t)
	cases := []struct {
		name    string
		applied int    // migrations applied before; -1: none, not even schema_version
		future  bool   // a newer oauthrelay's version on top
		want    string // in the error; "" opens
	}{
		{"empty database", -1, false, "start the relay"},
		{"an older schema", len(ms) - 1, false, "start the relay"},
		{"version 1 only", 1, false, "start the relay"},
		{"the current schema", len(ms), false, ""},
		{"a newer schema", len(ms), true, "run a newer oauthrelay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dsn := db.store(t)
			if tc.applied >= 0 {
				migrateTo(t, db, dsn, tc.applied)
			}
			if tc.future {
				if _, err := newTestPool(t, dsn).Exec(t.Context(), `INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')`); err != nil {
					t.Fatal(err)
				}
			}
			beforeVersion, beforeObjects := schemaState(t, dsn)
			s, err := Open(context.Background(), dsn, Options{NoMigrate: true})
			if err == nil {
				defer s.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Open(NoMigrate) of the current schema: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Open(NoMigrate) succeeded, want an error saying %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Open(NoMigrate): %v, want it to say %q", err, tc.want)
			case tc.future && !errors.Is(err, ErrNewerSchema):
				t.Fatalf("Open(NoMigrate): %v, want ErrNewerSchema", err)
			}
			if v, o := schemaState(t, dsn); v != beforeVersion || o != beforeObjects {
				t.Fatalf("Open(NoMigrate) changed the schema: version %d → %d, objects %d → %d", beforeVersion, v, beforeObjects, o)
			}
		})
	}
}
