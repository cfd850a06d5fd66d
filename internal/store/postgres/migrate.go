package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// migrationFiles are the schema's steps, NNNN_name.sql, applied in order
// and each once; the schema_version table records the ones applied.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock instances take while they migrate,
// so that several starting at once apply each step once. Advisory locks
// are per database; the number is "oauthrly" in ASCII.
const migrationLock int64 = 0x6f61757468726c79

// migrate brings the schema up to date, one step per transaction, each
// under the advisory lock: it re-reads the version, refuses a database
// newer than this code, applies the next step and records it.
func migrate(ctx context.Context, s *Store) error {
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	for {
		m, err := s.migrateStep(ctx, ms)
		if err != nil || m == nil {
			return err
		}
		s.log.Info("database schema migrated", "version", m.Version, "migration", m.Name)
	}
}

// migrateStep applies the first step the database lacks; nil when it
// has them all.
func (s *Store) migrateStep(ctx context.Context, ms []engine.Migration) (applied *engine.Migration, err error) {
	err = s.inTx(ctx, "migrating", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return s.mapErr("migrating", err)
		}
		current, err := s.schemaVersion(ctx, tx)
		if err != nil {
			return err
		}
		if current > len(ms) {
			return engine.NewerSchema(current, len(ms))
		}
		if current == len(ms) {
			return nil
		}
		m := ms[current]
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return s.mapErr("migration "+m.Name, err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		if err != nil {
			return s.mapErr("migration "+m.Name, err)
		}
		applied = &m
		return nil
	})
	return applied, err
}

// schemaVersion creates the schema_version table when missing and
// returns the newest version applied (0: none).
func (s *Store) schemaVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, s.mapErr("reading the schema version", err)
	}
	if !exists {
		_, err := tx.Exec(ctx, `CREATE TABLE schema_version (
			version integer     NOT NULL PRIMARY KEY,
			name    text        NOT NULL,
			applied timestamptz NOT NULL DEFAULT now())`)
		if err != nil {
			return 0, s.mapErr("creating schema_version", err)
		}
	}
	var current int
	err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&current)
	if err != nil {
		return 0, s.mapErr("reading the schema version", err)
	}
	return current, nil
}

// ErrOlderSchema: the database's schema lacks migrations this code has;
// only the relay (`oauthrelay run`) applies them.
var ErrOlderSchema = errors.New("store: database schema is older than this oauthrelay")

// checkSchema is migrate for Options.NoMigrate: it reads the version and
// changes nothing — not even schema_version, which an empty database
// lacks.
func checkSchema(ctx context.Context, s *Store) error {
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	current, err := s.readSchemaVersion(ctx)
	if err != nil {
		return err
	}
	switch {
	case current > len(ms):
		return engine.NewerSchema(current, len(ms))
	case current < len(ms):
		return fmt.Errorf("%w: the database has version %d, this oauthrelay needs %d; start the relay (oauthrelay run), which migrates it, then run this command again",
			ErrOlderSchema, current, len(ms))
	}
	return nil
}

// readSchemaVersion returns the newest version applied (0: none, or no
// schema_version table) without creating anything.
func (s *Store) readSchemaVersion(ctx context.Context) (int, error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, s.readErr(ctx, "reading the schema version", err)
	}
	current := 0
	if exists {
		err := s.pool.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&current)
		if err != nil {
			return 0, s.readErr(ctx, "reading the schema version", err)
		}
	}
	return current, nil
}
