package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// openConcurrently opens the store in dir from n goroutines; each pings
// (a write) and closes it.
func openConcurrently(dir string, n int) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = openPingClose(dir) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func openPingClose(dir string) error {
	s, err := Open(context.Background(), dir, Options{})
	if err != nil {
		return err
	}
	return errors.Join(s.Ping(context.Background()), s.Close())
}

// Another process opening the same new directory holds the write lock
// of the database, still in SQLite's default rollback-journal mode, while
// it switches it to WAL: Open waits for it (busy_timeout), then finds the
// database in WAL mode, instead of failing with SQLITE_BUSY. (SQLite
// answers a connection that holds a read lock and asks for the write lock
// at once, without its busy handler: the two might otherwise wait for
// each other.)
func TestOpenWaitsForTheSwitchToWAL(t *testing.T) {
	dir := t.TempDir()
	file, err := prepareFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	var committed atomic.Bool
	commitLater(holdWriteLock(t, other), &committed)
	s := openTest(t, dir, Options{})
	if !committed.Load() {
		t.Fatal("Open switched the database to WAL while another connection held its write lock")
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// `oauthrelay queue list` opens the store while the relay's writer is
// inside a write transaction: opening a database whose schema is up to
// date takes no write lock, so Open and a read go through while the
// transaction lasts, and a write once it has ended.
func TestOpenBesideAWriteTransaction(t *testing.T) {
	dir := t.TempDir()
	relay := openTest(t, dir, Options{})
	if err := relay.Enqueue(t.Context(), testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	commit := holdWriteLock(t, rawDB(t, dir))
	cli := openTest(t, dir, Options{})
	list, err := cli.List(t.Context(), store.Filter{})
	if err != nil || len(list) != 1 || list[0].ID != "m1" {
		t.Fatalf("List beside a write transaction = %+v, %v; want m1", list, err)
	}
	commit()
	if err := cli.Ping(t.Context()); err != nil {
		t.Fatalf("a write after the transaction ended: %v", err)
	}
}

// A database that needs migrating while another process is inside a
// write transaction: Open waits for it (busy_timeout), then migrates,
// instead of failing with SQLITE_BUSY.
func TestOpenWaitsForAWriteTransactionToMigrate(t *testing.T) {
	dir := t.TempDir()
	rawDBAtVersion(t, dir, 1).Close()
	commit := holdWriteLock(t, rawDB(t, dir))
	var committed atomic.Bool
	commitLater(commit, &committed)
	s := openTest(t, dir, Options{})
	if !committed.Load() {
		t.Fatal("Open migrated while another connection held the write lock")
	}
	wantMigratedOnce(t, dir)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// holdWriteLock begins a write transaction on db from a connection of
// its own, as the writer of another process would, and returns the
// function that commits it (called again at the latest when the test
// ends).
func holdWriteLock(t *testing.T, db *sql.DB) (commit func()) {
	t.Helper()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		t.Fatalf("BEGIN IMMEDIATE: %v", err)
	}
	var once sync.Once
	commit = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
				t.Errorf("COMMIT: %v", err)
			}
			conn.Close()
		})
	}
	t.Cleanup(commit)
	return commit
}

// commitLater commits after a while, then marks committed.
func commitLater(commit func(), committed *atomic.Bool) {
	time.AfterFunc(300*time.Millisecond, func() {
		committed.Store(true)
		commit()
	})
}
