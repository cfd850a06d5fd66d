package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

func TestOpenSetsPragmas(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	want := map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1",
		"busy_timeout": fmt.Sprint(busyTimeoutMillis), "journal_size_limit": fmt.Sprint(walSizeLimit)}
	for pragma, want := range want {
		var writer, reader string
		err := s.submit(t.Context(), &request{run: func(b *batch) error {
			return b.queryRow("PRAGMA " + pragma).Scan(&writer)
		}})
		wantWriter := want
		if pragma == "busy_timeout" {
			wantWriter = "0" // the writer polls for the lock itself (turn.go)
		}
		if err != nil || writer != wantWriter {
			t.Errorf("writer: PRAGMA %s = %q (%v), want %q", pragma, writer, err, wantWriter)
		}
		if err := s.rdb.QueryRow("PRAGMA " + pragma).Scan(&reader); err != nil || reader != want {
			t.Errorf("readers: PRAGMA %s = %q (%v), want %q", pragma, reader, err, want)
		}
	}
	if _, err := s.rdb.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, 1)`); err == nil {
		t.Error("the read connections can write")
	}
}

func TestOpenReopensAndMigratesOnce(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	if err := s.Enqueue(t.Context(), testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{})
	if got, err := storetest.ReadBody(context.Background(), s, "m1"); err != nil || !bytes.Equal(got, bodyOf("m1")) {
		t.Fatalf("after reopening: %v", err)
	}
	var versions int
	if err := s.rdb.QueryRow(`SELECT COUNT(*) FROM schema_version`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil || versions != len(ms) {
		t.Errorf("schema_version has %d rows for %d migrations (%v)", versions, len(ms), err)
	}
}

func TestOpenConcurrentlyOnANewDirectory(t *testing.T) {
	if err := openConcurrently(t.TempDir(), 4); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	rawExec(t, rawDB(t, dir), `INSERT INTO schema_version (version, applied) VALUES (99, 0)`)
	s, err := Open(t.Context(), dir, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	}
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("Open: %v, want ErrNewerSchema naming version 99", err)
	}
}

// A version-1 database from a development build made before 0001_init.sql
// last changed is refused with a clear error, not opened to fail every
// enqueue.
func TestOpenRefusesAnEarlyVersionOne(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	db := rawDB(t, dir)
	rawExec(t, db, `ALTER TABLE messages DROP COLUMN retried`)
	db.Close()
	_, err := Open(t.Context(), dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "development build") || !strings.Contains(err.Error(), "retried") {
		t.Fatalf("Open of an early version-1 database: %v, want the development-build error", err)
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notDB := t.TempDir()
	if err := os.WriteFile(filepath.Join(notDB, FileName), bytes.Repeat([]byte("not a database "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"empty path": "", "path is a file": file, "not a database": notDB} {
		if s, err := Open(t.Context(), path, Options{}); err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Errorf("migration %d: %s", i, m.Name)
		}
	}
}

// A step marked to run without a transaction is refused: the embedded
// engine has no such mode.
func TestNoTransactionMigrationRefused(t *testing.T) {
	fsys := fstest.MapFS{
		"migrations/0001_init.sql":  {Data: []byte("CREATE TABLE t (c INTEGER);\n")},
		"migrations/0002_index.sql": {Data: []byte(engine.NoTransactionMarker + "\nCREATE INDEX i ON t (c);\n")},
	}
	if ms, err := readMigrations(fsys); err == nil || !strings.Contains(err.Error(), "0002_index.sql") {
		t.Errorf("readMigrations = %d steps, %v; want an error naming 0002_index.sql", len(ms), err)
	}
}

// A 30 MB body is stored in chunks and read back chunk by chunk, from a
// reader that makes it up as it goes.
func TestLargeBodyInChunks(t *testing.T) {
	const size = 30 << 20
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	m := testMsg("big")
	src := rand.New(rand.NewPCG(1, 2))
	want := sha256.New()
	m.Body = io.TeeReader(io.LimitReader(randReader{src}, size), want)
	if err := s.Enqueue(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	var chunks int
	if err := rawDB(t, dir).QueryRow(`SELECT COUNT(*) FROM chunks WHERE msg_id = 'big'`).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks != (size+engine.ChunkSize-1)/engine.ChunkSize {
		t.Errorf("%d chunks for %d bytes", chunks, size)
	}
	rc, err := s.Body(t.Context(), "big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	if n, err := io.Copy(got, rc); err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("body differs")
	}
}

type randReader struct{ r *rand.Rand }

func (r randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}

// A body read while its message leaves the queue fails instead of
// ending early; so does one read after Close.
func TestBodyReaderAfterTheMessageWent(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := t.Context()
	for _, id := range []string{"deleted", "closed"} {
		m := testMsg(id)
		m.Body = bytes.NewReader(make([]byte, 3*engine.ChunkSize))
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	deleted, err := s.Body(ctx, "deleted")
	if err != nil {
		t.Fatal(err)
	}
	closed, err := s.Body(ctx, "closed")
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, engine.ChunkSize)
	for _, rc := range []io.Reader{deleted, closed} {
		if _, err := io.ReadFull(rc, first); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(deleted); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reading a deleted message's body: %v, want ErrNotFound", err)
	}
	s.Close()
	if _, err := io.ReadAll(closed); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("reading a body after Close: %v, want ErrUnavailable", err)
	}
}

// A database of version 1 (before the history search) with history in it
// is migrated on open: its records have no subject and Search finds them.
func TestOpenMigratesTheHistoryForSearch(t *testing.T) {
	dir := t.TempDir()
	db := rawDBAtVersion(t, dir, 1)
	at := unixNano(time.Now())
	rawExec(t, db, `INSERT INTO history (id, mode, listener, client, account, mail_from, rcpts, size, header_id, received, state, updated)
		VALUES ('old1', 'direct', 'l', 'c', 'a@example.com', '<a@example.com>', '["<b@example.net>","<c@example.org>"]', 1, '<m@x>', ?, 'sent', ?)`, at, at)
	db.Close()
	s := openTest(t, dir, Options{})
	for _, q := range []store.HistoryQuery{{Rcpt: "C@EXAMPLE.ORG"}, {HeaderID: "m@x"}, {Since: fromUnixNano(at)}} {
		recs, err := s.Search(t.Context(), q)
		if err != nil || len(recs) != 1 || recs[0].ID != "old1" || recs[0].Subject != "" {
			t.Errorf("Search(%+v) after the migration = %+v, %v", q, recs, err)
		}
	}
}

// rawDBAtVersion makes in dir the database an oauthrelay of schema
// version made, as rawDB opens it, for a test of the later migrations.
func rawDBAtVersion(t *testing.T, dir string, version int) *sql.DB {
	t.Helper()
	db := rawDB(t, dir)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	rawExec(t, db, `CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied INTEGER NOT NULL) STRICT`)
	for _, m := range ms[:version] {
		rawExec(t, db, m.SQL)
		rawExec(t, db, `INSERT INTO schema_version (version, applied) VALUES (?, 0)`, m.Version)
	}
	return db
}
