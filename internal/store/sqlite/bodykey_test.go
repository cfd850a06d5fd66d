package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// A message records the key its chunks are sealed with, 0 in clear.
func TestBodyKeyIsTheChunksKey(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		dir := t.TempDir()
		opts := Options{}
		if sealed {
			opts.Sealer = storetest.NewSealer(t)
		}
		s := openTest(t, dir, opts)
		long := testMsg("long")
		long.Body = bytes.NewReader(markedBody(600 << 10)) // three chunks
		if err := s.Enqueue(t.Context(), testMsg("m1"), long); err != nil {
			t.Fatal(err)
		}
		if err := s.Enqueue(t.Context(), testMsg("m2")); err != nil {
			t.Fatal(err)
		}
		var wrong, keys int
		err := rawDB(t, dir).QueryRow(`SELECT
			(SELECT COUNT(*) FROM messages m JOIN chunks c ON c.msg_id = m.id
				WHERE m.body_key IS NOT COALESCE(c.key_id, 0)),
			(SELECT COUNT(DISTINCT body_key) FROM messages)`).Scan(&wrong, &keys)
		if err != nil {
			t.Fatal(err)
		}
		if wrong != 0 || (sealed && keys != 2) || (!sealed && keys != 1) {
			t.Errorf("sealed %v: %d chunks under another key than their message's body_key; %d distinct body keys", sealed, wrong, keys)
		}
	}
}

// Messages queued before body_key existed (NULL) leave with their keys:
// their chunks tell which.
func TestMessagesWithoutBodyKeyLeaveWithTheirKeys(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{Sealer: storetest.NewSealer(t)})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, testMsg("m2"), testMsg("m3")); err != nil { // one key for both
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	rawExec(t, db, `UPDATE messages SET body_key = NULL`)
	keys := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM data_keys`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if c, err := s.Claim(ctx, "w1", time.Now(), 1, time.Minute, nil); err != nil || len(c) != 1 || c[0].ID != "m1" {
		t.Fatalf("Claim: %v", err)
	}
	err := s.Finish(ctx, "m1", "w1", store.Result{Counted: true,
		Rcpts: map[string]store.Recipient{"<rcpt@example.net>": {State: store.RcptDelivered}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := keys(); n != 1 {
		t.Errorf("%d keys after m1 was delivered, want 1", n)
	}
	if err := s.Delete(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	if n := keys(); n != 1 {
		t.Errorf("%d keys after m2 was deleted (m3 still uses its key), want 1", n)
	}
	if err := s.Delete(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	if n := keys(); n != 0 {
		t.Errorf("%d keys once every body is gone, want 0", n)
	}
}

// A database of schema version 2 with a message queued opens, migrated:
// the message is delivered from it and leaves.
func TestOpenMigratesTheQueueForBodyKeys(t *testing.T) {
	dir := t.TempDir()
	db := rawDBAtVersion(t, dir, 2)
	now := unixNano(time.Now())
	rawExec(t, db, `INSERT INTO messages (id, account, listener, client, mail_from, mail_params, rcpts, pending,
		size, chunks, header_id, received, expires, next_attempt, attempts, last_reply, state, bounce)
		VALUES ('old1', 'a@example.com', 'l', 'c', '<a@example.com>', '[]', '[{"addr":"<b@example.net>","state":"pending"}]', 1,
		5, 1, '', ?1, ?2, ?1, 0, '', 'queued', 0)`, now, now+int64(time.Hour))
	rawExec(t, db, `INSERT INTO chunks (msg_id, seq, key_id, data) VALUES ('old1', 0, NULL, x'68656c6c6f')`)
	rawExec(t, db, `INSERT INTO history (id, mode, listener, client, account, mail_from, rcpts, size, header_id, received, state, updated)
		VALUES ('old1', 'queue', 'l', 'c', 'a@example.com', '<a@example.com>', '["<b@example.net>"]', 5, '', ?1, 'queued', ?1)`, now)
	db.Close()
	s := openTest(t, dir, Options{})
	ctx := t.Context()
	if got, err := storetest.ReadBody(context.Background(), s, "old1"); err != nil || string(got) != "hello" {
		t.Fatalf("body after the migration: %q, %v", got, err)
	}
	if c, err := s.Claim(ctx, "w1", time.Now(), 1, time.Minute, nil); err != nil || len(c) != 1 {
		t.Fatalf("Claim: %v", err)
	}
	err := s.Finish(ctx, "old1", "w1", store.Result{Counted: true,
		Rcpts: map[string]store.Recipient{"<b@example.net>": {State: store.RcptDelivered}}})
	if err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.rdb.QueryRow(`SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM chunks)`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d rows of the delivered message left (%v)", left, err)
	}
	var bodyKey sql.NullInt64
	if err := s.Enqueue(ctx, testMsg("new1")); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.QueryRow(`SELECT body_key FROM messages WHERE id = 'new1'`).Scan(&bodyKey); err != nil || !bodyKey.Valid || bodyKey.Int64 != 0 {
		t.Errorf("a message queued after the migration has body_key %v (%v), want 0", bodyKey, err)
	}
}
