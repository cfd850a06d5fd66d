package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// migrationFiles are the schema's steps, NNNN_name.sql, applied in order
// and each once; the schema_version table records the ones applied.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrNewerSchema: the database was written by a newer oauthrelay, whose
// schema this one does not know. Open refuses it rather than guess.
var ErrNewerSchema = engine.ErrNewerSchema

// migrations returns the embedded migrations in order.
func migrations() ([]engine.Migration, error) {
	return readMigrations(migrationFiles)
}

// readMigrations reads the migrations of fsys's migrations directory. A
// step marked to run without a transaction is refused: the embedded
// database has one process writing it while it migrates (README
// "store"), so no step needs to let others write meanwhile, and each
// must be all or nothing.
func readMigrations(fsys fs.FS) ([]engine.Migration, error) {
	ms, err := engine.Migrations(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.NoTransaction {
			return nil, fmt.Errorf("store: migration %s: the embedded engine runs every step in a transaction", m.Name)
		}
	}
	return ms, nil
}

// migrate brings the schema up to date. Each step runs in its own
// IMMEDIATE transaction that first re-reads the version, so two processes
// opening a new database at once apply every step once. A database
// already up to date is only read: `oauthrelay queue` opens it beside the
// relay without waiting for the relay's writer.
//
// mayMigrate, when not nil, is asked before the first step is applied.
func migrate(ctx context.Context, db *sql.DB, log hclog.Logger, mayMigrate func(current, latest int) error) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version INTEGER NOT NULL PRIMARY KEY,
		applied INTEGER NOT NULL
	) STRICT`)
	if err != nil {
		return mapErr("creating schema_version", err)
	}
	current, err := schemaVersion(ctx, db, len(ms))
	if err != nil {
		return err
	}
	if current < len(ms) && mayMigrate != nil {
		if err := mayMigrate(current, len(ms)); err != nil {
			return err
		}
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		applied, err := applyMigration(ctx, db, m, len(ms))
		if err != nil {
			return err
		}
		if applied {
			log.Info("database schema migrated", "version", m.Version, "migration", m.Name)
		}
	}
	return checkSchema(ctx, db)
}

// schemaColumns are columns the code needs that version 1 had not always
// had: 0001_init.sql changed before the first release, and a database a
// development build made from an earlier version 1 lacks them.
var schemaColumns = []struct{ table, column string }{
	{"messages", "retried"},
	{"events", "seq"},
}

// checkSchema refuses such a database with a clear error rather than
// failing every enqueue.
func checkSchema(ctx context.Context, db *sql.DB) error {
	for _, c := range schemaColumns {
		var n int
		err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, c.column).Scan(&n)
		if err != nil {
			return mapErr("checking the schema", err)
		}
		if n == 0 {
			return fmt.Errorf("store: table %s has no column %s: the database was made by a development build of oauthrelay before the first release; move it away (deliver or export what it holds first) and start again", c.table, c.column)
		}
	}
	return nil
}

// applyMigration applies m unless the database has it already; latest is
// the newest version this code knows.
func applyMigration(ctx context.Context, db *sql.DB, m engine.Migration, latest int) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, mapErr("migrating", err)
	}
	defer tx.Rollback()
	current, err := schemaVersion(ctx, tx, latest)
	if err != nil || current >= m.Version {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, mapErr("migration "+m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`, m.Version, time.Now().UnixNano()); err != nil {
		return false, mapErr("migration "+m.Name, err)
	}
	return true, mapErr("migration "+m.Name, tx.Commit())
}

// schemaVersion returns the newest version the database has, refusing
// one newer than latest, the newest this code knows.
func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, latest int) (int, error) {
	var current int
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return 0, mapErr("reading schema version", err)
	}
	if current > latest {
		return 0, engine.NewerSchema(current, latest)
	}
	return current, nil
}
