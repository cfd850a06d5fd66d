package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// busyTimeoutMillis is how long a connection waits for another one's lock
// (another process's writer, a checkpoint) before SQLITE_BUSY.
const busyTimeoutMillis = 10000

// walSizeLimit is the size the WAL file is cut back to after a checkpoint.
const walSizeLimit = 64 << 20

// readConns bounds the read-only connections.
const readConns = 8

// dsn is a SQLite URI for file with the pragmas every connection needs:
// FULL synchronous (a commit is fsync'd before it returns, see
// https://www.sqlite.org/pragma.html#pragma_synchronous), foreign keys
// (bodies go with their message). txlock is how transactions begin. WAL
// mode (readers and a writer side by side, across processes) is not set
// here but once, by Open (switchToWAL), which must retry it; the
// database file keeps it.
func dsn(file, txlock string, extra ...string) string {
	q := url.Values{}
	q.Set("_txlock", txlock)
	q.Add("_pragma", "busy_timeout("+strconv.Itoa(busyTimeoutMillis)+")")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	// Bodies are the most sensitive data the relay holds: a deleted one is
	// overwritten with zeros, not left in free pages of the file
	// (https://www.sqlite.org/pragma.html#pragma_secure_delete).
	q.Add("_pragma", "secure_delete(ON)")
	// Savepoints' statement journals in memory, not in temporary files:
	// each request of a batch runs in its own savepoint (bench: the
	// store's write syscalls per message fell from 38 to 17).
	q.Add("_pragma", "temp_store(MEMORY)")
	// A large message grows the WAL file; after a checkpoint SQLite
	// truncates it back to this size instead of keeping it at its peak.
	q.Add("_pragma", "journal_size_limit("+strconv.Itoa(walSizeLimit)+")")
	for _, p := range extra {
		q.Add("_pragma", p)
	}
	// The path is escaped: '?', '#' and '%' mean something in a URI.
	return "file:" + (&url.URL{Path: file}).EscapedPath() + "?" + q.Encode()
}

// openWriter opens the writer's pool of one connection. Its transactions
// begin IMMEDIATE: they take the write lock at once, so they never fail
// half-way for another process's write.
func openWriter(ctx context.Context, file string, maxPageCount int) (*sql.DB, error) {
	// Checkpoints run beside the writer, not inside its commits
	// (checkpoint.go).
	extra := []string{"wal_autocheckpoint(0)"}
	if maxPageCount > 0 {
		extra = append(extra, "max_page_count("+strconv.Itoa(maxPageCount)+")")
	}
	db, err := sql.Open("sqlite", dsn(file, "immediate", extra...))
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", file, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	err = switchToWAL(ctx, db)
	if err == nil {
		err = checkPragmas(ctx, db)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", file, err)
	}
	return db, nil
}

// openReaders opens the pool of read-only connections.
func openReaders(ctx context.Context, file string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(file, "deferred", "query_only(1)"))
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", file, err)
	}
	db.SetMaxOpenConns(readConns)
	db.SetMaxIdleConns(readConns)
	if err := checkPragmas(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", file, err)
	}
	return db, nil
}

// checkPragmas verifies that the connection really is in WAL mode with
// FULL synchronous and foreign keys on: SQLite ignores a pragma it cannot
// apply (WAL is impossible on some file systems) instead of failing.
func checkPragmas(ctx context.Context, db *sql.DB) error {
	want := []struct{ pragma, value string }{
		{"journal_mode", "wal"},
		{"synchronous", "2"},
		{"foreign_keys", "1"},
		{"secure_delete", "1"},
	}
	for _, w := range want {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+w.pragma).Scan(&got); err != nil {
			return mapErr("checking pragmas", err)
		}
		if !strings.EqualFold(got, w.value) {
			return fmt.Errorf("PRAGMA %s is %q, want %q", w.pragma, got, w.value)
		}
	}
	return nil
}
