package postgres

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// vaultUsers sets up what Vault's database secrets engine makes: a role
// that owns the schema's objects (NOLOGIN) and short-lived login users
// that are members of it. Roles are the server's, so their names are the
// test's own; they are dropped when it ends.
func vaultUsers(t *testing.T, db *testDB, schema string, users ...string) (owner string) {
	t.Helper()
	owner = fmt.Sprintf("relay_owner_%d", db.next.Add(1))
	db.exec(t, "CREATE ROLE "+owner+" NOLOGIN")
	db.exec(t, "GRANT ALL ON SCHEMA "+schema+" TO "+owner)
	for _, u := range users {
		db.exec(t, "CREATE ROLE "+u+" LOGIN PASSWORD 'pw-"+u+"' IN ROLE "+owner)
	}
	t.Cleanup(func() {
		for _, u := range users {
			db.exec(t, "DROP ROLE IF EXISTS "+u)
		}
		db.exec(t, "DROP OWNED BY "+owner+" CASCADE")
		db.exec(t, "DROP ROLE IF EXISTS "+owner)
	})
	return owner
}

// switchable is a Credentials function whose user changes when told, like
// a renewal of Vault-issued credentials.
type switchable struct {
	user  atomic.Value // string
	calls atomic.Int64
}

func (c *switchable) get(ctx context.Context) (string, string, error) {
	c.calls.Add(1)
	u := c.user.Load().(string)
	return u, "pw-" + u, nil
}

// sessionUsers lists the users of the store's connections to db,
// as the server sees them.
func sessionUsers(t *testing.T, db *testDB, users ...string) []string {
	t.Helper()
	rows, err := db.admin.Query(context.Background(), `SELECT usename FROM pg_stat_activity
		WHERE datname = current_database() AND usename = ANY ($1) ORDER BY usename`, users)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			t.Fatal(err)
		}
		got = append(got, u)
	}
	return slices.Compact(got)
}

// blockingReader gives size zero bytes, pausing once it gave pauseAt
// until released.
type blockingReader struct {
	left, given, pauseAt int
	paused, release      chan struct{}
	once                 sync.Once
}

func newBlockingReader(size, pauseAt int) *blockingReader {
	return &blockingReader{left: size, pauseAt: pauseAt, paused: make(chan struct{}), release: make(chan struct{})}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.given == r.pauseAt {
		r.once.Do(func() { close(r.paused); <-r.release })
	}
	n := min(len(p), r.left)
	if r.given < r.pauseAt {
		n = min(n, r.pauseAt-r.given)
	}
	clear(p[:n])
	r.left, r.given = r.left-n, r.given+n
	return n, nil
}

// With Vault-issued credentials and a role: the tables belong to the
// role; after RotateConnections the store logs in with the new
// credentials, and a transaction in flight on an old connection still
// commits.
func TestRotateConnections(t *testing.T) {
	db := newTestDB(t)
	dsn := db.store(t)
	schema := fmt.Sprintf("store_%d", db.next.Load())
	suffix := db.next.Add(1)
	u1, u2 := fmt.Sprintf("v_user1_%d", suffix), fmt.Sprintf("v_user2_%d", suffix)
	owner := vaultUsers(t, db, schema, u1, u2)
	creds := &switchable{}
	creds.user.Store(u1)
	s := openTest(t, dsn, Options{Role: owner, Credentials: creds.get})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("before")); err != nil {
		t.Fatal(err)
	}
	var tableOwner string
	if err := db.admin.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'messages'`, schema).Scan(&tableOwner); err != nil {
		t.Fatal(err)
	}
	if tableOwner != owner {
		t.Errorf("the tables belong to %s, want the role %s", tableOwner, owner)
	}

	// A large message streams in a transaction of its own; it waits in
	// the middle of its body, its first chunk stored, while the
	// connections rotate.
	body := newBlockingReader(3*engine.ChunkSize, 2*engine.ChunkSize)
	big := testMsg("in-flight")
	big.Body, big.Size = body, 3*engine.ChunkSize
	enqueued := make(chan error, 1)
	go func() { enqueued <- s.Enqueue(context.Background(), big) }()
	<-body.paused
	creds.user.Store(u2)
	s.RotateConnections()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after the rotation: %v", err)
	}
	if got := sessionUsers(t, db, u1, u2); !slices.Equal(got, []string{u1, u2}) {
		t.Errorf("sessions during the transaction in flight: %v, want the old one and new ones", got)
	}
	var inTx int
	err := db.admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE usename = $1 AND state = 'idle in transaction'`, u1).Scan(&inTx)
	if err != nil || inTx != 1 {
		t.Errorf("%d transactions of the old user in flight (%v), want 1", inTx, err)
	}
	close(body.release)
	if err := <-enqueued; err != nil {
		t.Fatalf("the Enqueue in flight during the rotation: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the old connection to close", func() bool {
		return slices.Equal(sessionUsers(t, db, u1, u2), []string{u2})
	})
	for _, id := range []string{"before", "in-flight"} {
		rc, err := s.Body(ctx, id)
		if err != nil {
			t.Fatalf("Body(%s) with the new credentials: %v", id, err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("Body(%s): %v after %d bytes", id, err, n)
		}
	}
	if err := s.Enqueue(ctx, testMsg("after")); err != nil {
		t.Fatalf("Enqueue with the new credentials: %v", err)
	}
}

// Every session commits synchronously, whatever the server's default
// (the test server's is off).
func TestSessionsCommitSynchronously(t *testing.T) {
	logs := new(testutil.LogBuffer)
	s := openTest(t, newTestDB(t).store(t), Options{Logger: logs.Logger(t)})
	var setting string
	if err := s.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != "on" {
		t.Errorf("synchronous_commit = %s in the store's session", setting)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("synchronous_commit is off")) {
		t.Errorf("no warning about the server's setting in the log:\n%s", logs.String())
	}
}
