package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

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
