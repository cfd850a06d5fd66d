package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ErrNewerSchema: the database was written by a newer oauthrelay, whose
// schema this one does not know. Engines refuse it rather than guess.
var ErrNewerSchema = errors.New("store: database schema is newer than this oauthrelay")

// NewerSchema is the error for a database at version current when this
// code knows versions up to latest.
func NewerSchema(current, latest int) error {
	return fmt.Errorf("%w: the database has version %d, this oauthrelay knows up to %d; run a newer oauthrelay", ErrNewerSchema, current, latest)
}

// Migration is one step of an engine's schema.
type Migration struct {
	Version int
	Name    string // the file's name, NNNN_name.sql
	SQL     string
	// NoTransaction: the file's first line is NoTransactionMarker. The
	// step holds statements that cannot run in a transaction (PostgreSQL's
	// CREATE INDEX CONCURRENTLY): the engine runs them one by one, each
	// committed on its own, and records the version after the last. Its
	// statements must therefore be safe to run again from the first,
	// after an interruption anywhere (IF NOT EXISTS, IF EXISTS). An
	// engine that has no such mode refuses the step.
	NoTransaction bool
}

// NoTransactionMarker, as the first line of a migration file, makes it a
// Migration.NoTransaction step.
const NoTransactionMarker = "-- oauthrelay:no-transaction"

// Migrations reads an engine's embedded migrations, the files
// dir/NNNN_name.sql of fsys, in order; their numbers must run from 1
// without a gap, so that a step missing from a build is caught.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	names, err := fs.Glob(fsys, dir+"/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, name := range names {
		m, err := readMigration(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("store: migration %s: want number %d", m.Name, i+1)
		}
	}
	return ms, nil
}

func readMigration(fsys fs.FS, name string) (Migration, error) {
	base := path.Base(name)
	num, _, ok := strings.Cut(base, "_")
	version, err := strconv.Atoi(num)
	if !ok || err != nil {
		return Migration{}, fmt.Errorf("store: migration %s: name is not NNNN_name.sql", base)
	}
	text, err := fs.ReadFile(fsys, name)
	if err != nil {
		return Migration{}, err
	}
	first, _, _ := strings.Cut(string(text), "\n")
	noTx := strings.TrimSpace(first) == NoTransactionMarker
	return Migration{Version: version, Name: base, SQL: string(text), NoTransaction: noTx}, nil
}
