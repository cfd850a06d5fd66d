package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// migrate brings the schema up to date (migrator).
func migrate(ctx context.Context, s *Store) error {
	ms, err := engine.Migrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	return newMigrator(s).run(ctx, ms)
}

// querier is what a transaction and a connection share.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion creates the schema_version table when missing and
// returns the newest version applied (0: none).
func (s *Store) schemaVersion(ctx context.Context, q querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, s.readErr(ctx, "reading the schema version", err)
	}
	if !exists {
		_, err := q.Exec(ctx, `CREATE TABLE schema_version (
			version integer     NOT NULL PRIMARY KEY,
			name    text        NOT NULL,
			applied timestamptz NOT NULL DEFAULT now())`)
		if err != nil {
			return 0, s.readErr(ctx, "creating schema_version", err)
		}
	}
	var current int
	err := q.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&current)
	if err != nil {
		return 0, s.readErr(ctx, "reading the schema version", err)
	}
	return current, nil
}

// recordVersion records that step m is applied.
func (s *Store) recordVersion(ctx context.Context, q querier, m engine.Migration) error {
	_, err := q.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.Version, m.Name)
	return s.readErr(ctx, "migration "+m.Name, err)
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
