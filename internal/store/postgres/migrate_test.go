package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations")
	}
	for i, m := range ms {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Errorf("migration %d: %s", i, m.Name)
		}
	}
}

// Instances that start at once on an empty database apply each step once
// (the advisory lock) and all open.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	db := newTestDB(t)
	dsn := db.store(t)
	const instances = 6
	var wg sync.WaitGroup
	errs := make([]error, instances)
	for i := range instances {
		wg.Go(func() {
			s, err := Open(t.Context(), dsn, Options{})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ms, _ := engine.Migrations(migrationFiles, "migrations")
	s := openTest(t, dsn, Options{})
	var rows, newest int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_version`).Scan(&rows, &newest); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || newest != len(ms) {
		t.Errorf("schema_version has %d rows up to version %d, want %d", rows, newest, len(ms))
	}
}

// A database a newer oauthrelay migrated is refused, by name.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := newTestDB(t).store(t)
	s := openTest(t, dsn, Options{})
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')`); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), dsn, Options{})
	if err == nil {
		s2.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("Open: %v, want ErrNewerSchema naming version 99", err)
	}
}

// A database at version 2 (before the history search) with history in it
// is migrated on open: its records have no subject and Search finds them.
func TestMigratesTheHistoryForSearch(t *testing.T) {
	dsn := newTestDB(t).store(t)
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	steps := []string{`CREATE TABLE schema_version (version integer NOT NULL PRIMARY KEY, name text NOT NULL,
		applied timestamptz NOT NULL DEFAULT now())`, ms[0].SQL, ms[1].SQL,
		`INSERT INTO schema_version (version, name) VALUES (1, '0001'), (2, '0002')`,
		`INSERT INTO history (id, mode, listener, client, account, mail_from, rcpts, size, header_id, received, state, updated)
			VALUES ('old1', 'direct', 'l', 'c', 'a@example.com', '<a@example.com>', '{"<b@example.net>","<c@example.org>"}',
				1, '<m@x>', now(), 'sent', now())`}
	for _, sql := range steps {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%.40s: %v", sql, err)
		}
	}
	s := openTest(t, dsn, Options{})
	for _, q := range []store.HistoryQuery{{Rcpt: "C@EXAMPLE.ORG"}, {HeaderID: "m@x"}, {Since: time.Now().Add(-time.Hour)}} {
		recs, err := s.Search(t.Context(), q)
		if err != nil || len(recs) != 1 || recs[0].ID != "old1" || recs[0].Subject != "" {
			t.Errorf("Search(%+v) after the migration = %+v, %v", q, recs, err)
		}
	}
}
