package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// rawDB opens the store's database file beside the store, as an attacker
// with the file (or a curious backup) would.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), "deferred"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func rawExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// markedBody is a body of n bytes made of a recognisable plaintext line.
func markedBody(n int) []byte {
	line := []byte("PLAINTEXT-CANARY the quick brown fox jumps over the lazy dog\r\n")
	return bytes.Repeat(line, n/len(line)+1)[:n]
}

// filesContain reports whether the database file or its WAL contains
// needle.
func filesContain(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	for _, name := range []string{FileName, FileName + "-wal"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, needle) {
			return true
		}
	}
	return false
}

func TestSealedBodiesAreNotOnDisk(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{}
			sealer := storetest.NewSealer(t)
			sealer.Issued = make(chan []byte, 100)
			if sealed {
				opts.Sealer = sealer
			}
			s := openTest(t, dir, opts)
			m := testMsg("m1")
			m.Body = bytes.NewReader(markedBody(600 << 10))
			if err := s.Enqueue(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			canary := []byte("PLAINTEXT-CANARY")
			if got := filesContain(t, dir, canary); got != !sealed {
				t.Fatalf("plaintext on disk while open: %v, want %v", got, !sealed)
			}
			if got, err := storetest.ReadBody(context.Background(), s, "m1"); err != nil || !bytes.Equal(got, markedBody(600<<10)) {
				t.Fatalf("Body: %v", err)
			}
			s.Close()
			if got := filesContain(t, dir, canary); got != !sealed {
				t.Errorf("plaintext on disk after Close: %v, want %v", got, !sealed)
			}
			close(sealer.Issued)
			for key := range sealer.Issued {
				if filesContain(t, dir, key) {
					t.Error("a plaintext data key is on disk")
				}
			}
		})
	}
}

func TestSealedChunksResistTampering(t *testing.T) {
	const size = 600 << 10 // three chunks
	cases := []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB)
	}{
		{"flipped byte", func(t *testing.T, db *sql.DB) {
			rawExec(t, db, `UPDATE chunks SET data = CAST(substr(data, 1, 100) || x'00' || substr(data, 102) AS BLOB) WHERE msg_id = 'a' AND seq = 1`)
		}},
		{"chunks swapped within a message", func(t *testing.T, db *sql.DB) {
			rawExec(t, db, `UPDATE chunks SET seq = 9 WHERE msg_id = 'a' AND seq = 0`)
			rawExec(t, db, `UPDATE chunks SET seq = 0 WHERE msg_id = 'a' AND seq = 1`)
			rawExec(t, db, `UPDATE chunks SET seq = 1 WHERE msg_id = 'a' AND seq = 9`)
		}},
		{"chunk from another message of the batch", func(t *testing.T, db *sql.DB) {
			rawExec(t, db, `UPDATE chunks SET data = (SELECT data FROM chunks WHERE msg_id = 'b' AND seq = 0)
				WHERE msg_id = 'a' AND seq = 0`)
		}},
		{"cut short", func(t *testing.T, db *sql.DB) {
			rawExec(t, db, `DELETE FROM chunks WHERE msg_id = 'a' AND seq = 2`)
			rawExec(t, db, `UPDATE messages SET chunks = 2, size = ? WHERE id = 'a'`, 2*engine.ChunkSize)
		}},
		{"wrapped key replaced", func(t *testing.T, db *sql.DB) {
			rawExec(t, db, `UPDATE data_keys SET wrapped = x'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'`)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{Sealer: storetest.NewSealer(t)})
			a, b := testMsg("a"), testMsg("b")
			a.Body, b.Body = bytes.NewReader(markedBody(size)), bytes.NewReader(markedBody(size))
			if err := s.Enqueue(t.Context(), a, b); err != nil { // one batch: one data key
				t.Fatal(err)
			}
			tc.tamper(t, rawDB(t, dir))
			got, err := storetest.ReadBody(context.Background(), s, "a")
			if err == nil {
				t.Fatalf("Body of a tampered message read %d bytes without error", len(got))
			}
			t.Logf("Body: %v", err)
			if got, err := storetest.ReadBody(context.Background(), s, "b"); tc.name != "wrapped key replaced" && (err != nil || len(got) != size) {
				t.Errorf("the other message of the batch: %v", err)
			}
		})
	}
}

func TestSealerCalls(t *testing.T) {
	dir := t.TempDir()
	sealer := storetest.NewSealer(t)
	s := openTest(t, dir, Options{Sealer: sealer})
	errs := runInOrder(t, s, []namedCall{
		{"m1", func() error { return s.Enqueue(t.Context(), testMsg("m1")) }},
		{"m2", func() error { return s.Enqueue(t.Context(), testMsg("m2"), testMsg("m3")) }},
		{"hold", func() error { return s.Hold(t.Context(), "m1") }},
	})
	for name, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := sealer.DataKeys.Load(); n != 1 {
		t.Errorf("DataKey called %d times for one batch, want 1", n)
	}
	var wrapped [][]byte
	rows, err := rawDB(t, dir).Query(`SELECT wrapped FROM data_keys`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var w []byte
		if err := rows.Scan(&w); err != nil {
			t.Fatal(err)
		}
		wrapped = append(wrapped, w)
	}
	rows.Close()
	if len(wrapped) != 1 {
		t.Fatalf("data_keys has %d rows, want 1", len(wrapped))
	}
	// The row is the sealer's wrapped form, not the key.
	if key, err := sealer.Unwrap(t.Context(), wrapped[0]); err != nil || bytes.Contains(wrapped[0], key) {
		t.Errorf("data_keys holds something other than a wrapped key (%v)", err)
	}
	sealer.Unwraps.Store(0)
	for range 2 {
		for _, id := range []string{"m1", "m2", "m3"} {
			if got, err := storetest.ReadBody(context.Background(), s, id); err != nil || !bytes.Equal(got, bodyOf(id)) {
				t.Fatalf("Body(%s): %v", id, err)
			}
		}
	}
	if n := sealer.Unwraps.Load(); n != 1 {
		t.Errorf("Unwrap called %d times for one key, want 1 (cached)", n)
	}
	// Nothing to seal, nothing drawn.
	if err := s.Release(t.Context(), "m1"); err != nil {
		t.Fatal(err)
	}
	if n := sealer.DataKeys.Load(); n != 1 {
		t.Errorf("DataKey called for a batch without bodies")
	}
}

func TestSealerDown(t *testing.T) {
	sealer := storetest.NewSealer(t)
	s := openTest(t, t.TempDir(), Options{Sealer: sealer})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("before")); err != nil {
		t.Fatal(err)
	}
	sealer.Fail.Store(true)
	err := s.Enqueue(ctx, testMsg("m1"))
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, storetest.ErrSealerDown) {
		t.Errorf("Enqueue with the sealer down: %v, want ErrUnavailable wrapping the cause", err)
	}
	if _, err := storetest.ReadBody(context.Background(), s, "before"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Body with the sealer down and the key not cached: %v, want ErrUnavailable", err)
	}
	if err := s.Hold(ctx, "before"); err != nil {
		t.Errorf("Hold with the sealer down: %v", err)
	}
	sealer.Fail.Store(false)
	if err := s.Enqueue(ctx, testMsg("m1")); err != nil {
		t.Errorf("Enqueue once the sealer is back: %v", err)
	}
}

func TestSealedBodyWithoutSealer(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{Sealer: storetest.NewSealer(t)})
	if err := s.Enqueue(t.Context(), testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{})
	got, err := storetest.ReadBody(context.Background(), s, "m1")
	if err == nil || bytes.Contains(got, []byte("secret-body-marker")) {
		t.Errorf("a sealed body read without a sealer: %q, %v", got, err)
	}
	// A store that starts sealing still reads the bodies stored in clear.
	if err := s.Enqueue(t.Context(), testMsg("clear")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, Options{Sealer: storetest.NewSealer(t)})
	if got, err := storetest.ReadBody(context.Background(), s, "clear"); err != nil || !bytes.Equal(got, bodyOf("clear")) {
		t.Errorf("a clear body read with a sealer: %v", err)
	}
}

// A wrapped key goes when the last chunk that uses it does.
func TestDataKeysGoWithTheirBodies(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{Sealer: storetest.NewSealer(t)})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("m1"), testMsg("m2")); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM data_keys`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := s.Delete(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d keys after deleting one of two messages, want 1", n)
	}
	c, err := s.Claim(ctx, "w1", time.Now(), 1, time.Minute, nil)
	if err != nil || len(c) != 1 {
		t.Fatalf("Claim: %v", err)
	}
	err = s.Finish(ctx, "m2", "w1", store.Result{Counted: true,
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {State: store.RcptDelivered}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("%d keys once every body is gone, want 0", n)
	}
}

// A deleted body does not linger in free pages: once the WAL is
// checkpointed (at Close) the database file no longer holds it
// (secure_delete).
func TestDeletedBodiesAreOverwritten(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	m := testMsg("m1")
	m.Body = bytes.NewReader(markedBody(600 << 10))
	if err := s.Enqueue(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), "m1"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if filesContain(t, dir, []byte("PLAINTEXT-CANARY")) {
		t.Error("the deleted body is still readable in the store's files")
	}
}

// hangingSealer blocks DataKey until released, like a Vault that stopped
// answering.
type hangingSealer struct {
	*storetest.Sealer
	entered, release chan struct{}
}

func (h *hangingSealer) DataKey(ctx context.Context) ([]byte, []byte, error) {
	h.entered <- struct{}{}
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return h.Sealer.DataKey(context.Background())
}

// Drawing a data key happens before the write transaction: a slow Vault
// does not hold the write lock, so writes without bodies (Ping, Finish,
// the operator's commands from another process) go on.
func TestSlowSealerDoesNotHoldTheWriteLock(t *testing.T) {
	hs := &hangingSealer{Sealer: storetest.NewSealer(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	var once sync.Once
	unblock := func() { once.Do(func() { close(hs.release) }) }
	dir := t.TempDir()
	s := openTest(t, dir, Options{Sealer: hs})
	t.Cleanup(unblock) // before Close, which waits for the writer
	enq := make(chan error, 1)
	go func() { enq <- s.Enqueue(context.Background(), storetest.BenchMessage("slow", []byte("hello"))) }()
	<-hs.entered
	other := openTest(t, dir, Options{})
	pinged := make(chan error, 1)
	go func() { pinged <- other.Ping(context.Background()) }()
	select {
	case err := <-pinged:
		if err != nil {
			t.Errorf("Ping from another store while a data key is drawn: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a write from another process waited for the data key")
	}
	unblock()
	if err := <-enq; err != nil {
		t.Errorf("Enqueue: %v", err)
	}
}

// Prune's sweep of unused data keys can share a batch with enqueues: a
// key row outlives a request whose body failed (it is written outside
// the request's savepoint), and the sweep must leave it to the batch's
// later messages, which seal their bodies with it.
func TestKeySweepKeepsTheBatchsKey(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{Sealer: storetest.NewSealer(t)})
	ctx := t.Context()
	release := stallWriter(t, s)
	broken, sweep, good := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() {
		m := testMsg("broken")
		m.Body = &errReader{errors.New("client went away")}
		broken <- s.Enqueue(ctx, m)
	}()
	waitRequests(t, s, 1)
	go func() { sweep <- s.submit(ctx, &request{run: (*batch).sweepKeys}) }()
	waitRequests(t, s, 2)
	go func() { good <- s.Enqueue(ctx, testMsg("good")) }()
	waitRequests(t, s, 3)
	release()
	if err := <-broken; err == nil {
		t.Error("the message whose body failed was stored")
	}
	if err := <-sweep; err != nil {
		t.Errorf("sweep: %v", err)
	}
	if err := <-good; err != nil {
		t.Fatalf("a good message of the sweep's batch refused: %v", err)
	}
	rc, err := s.Body(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, bodyOf("good")) {
		t.Errorf("body %q (%v), want %q", got, err, bodyOf("good"))
	}
}
