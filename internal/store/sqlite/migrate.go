package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrNewerSchema: the database was written by a newer oauthrelay, whose
// schema this one does not know. Open refuses it rather than guess.
var ErrNewerSchema = errors.New("store: database schema is newer than this oauthrelay")

// migrationFiles are the schema's steps, NNNN_name.sql, applied in order
// and each once; the schema_version table records the ones applied.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order; their numbers run
// from 1 without a gap.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		m, err := readMigration(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migration %s: want number %d", m.name, i+1)
		}
	}
	return ms, nil
}

func readMigration(name string) (migration, error) {
	base := path.Base(name)
	num, _, ok := strings.Cut(base, "_")
	version, err := strconv.Atoi(num)
	if !ok || err != nil {
		return migration{}, fmt.Errorf("store: migration %s: name is not NNNN_name.sql", base)
	}
	text, err := migrationFiles.ReadFile(name)
	if err != nil {
		return migration{}, err
	}
	return migration{version: version, name: base, sql: string(text)}, nil
}

// migrate brings the schema up to date. Each step runs in its own
// IMMEDIATE transaction that first re-reads the version, so two processes
// opening a new database at once apply every step once.
func migrate(ctx context.Context, db *sql.DB, log hclog.Logger) error {
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
	for _, m := range ms {
		applied, err := applyMigration(ctx, db, m, len(ms))
		if err != nil {
			return err
		}
		if applied {
			log.Info("database schema migrated", "version", m.version, "migration", m.name)
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
func applyMigration(ctx context.Context, db *sql.DB, m migration, latest int) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, mapErr("migrating", err)
	}
	defer tx.Rollback()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return false, mapErr("reading schema version", err)
	}
	if current > latest {
		return false, fmt.Errorf("%w: the database has version %d, this oauthrelay knows up to %d; run a newer oauthrelay", ErrNewerSchema, current, latest)
	}
	if current >= m.version {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, mapErr("migration "+m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`, m.version, time.Now().UnixNano()); err != nil {
		return false, mapErr("migration "+m.name, err)
	}
	return true, mapErr("migration "+m.name, tx.Commit())
}
