// Package sqlite is the embedded store engine: one SQLite database file in
// WAL mode with synchronous=FULL, opened through the pure-Go driver
// modernc.org/sqlite.
//
// One writer goroutine owns every write transaction (group commit): the
// requests waiting when it is ready, up to Options.MaxBatch messages, share
// one transaction and so one fsync; each runs inside its own SAVEPOINT, so a
// request that fails leaves the others of its batch alone. Reads use a
// separate pool of read-only connections, which WAL lets run beside the
// writer. The `oauthrelay queue` commands open the same database while the
// relay runs: the writers of the two processes take turns (turn.go).
//
// Bodies are stored in chunks of engine.ChunkSize bytes, read from the message
// inside the commit and back chunk by chunk, so no message is ever held in
// memory whole. With a Sealer, every chunk is encrypted with AES-256-GCM
// under a data key drawn once per batch (see seal.go).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	sqlite "modernc.org/sqlite" // also registers the "sqlite" database/sql driver

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// FileName is the database file inside the store directory. SQLite keeps
// its -wal and -shm files beside it.
const FileName = "oauthrelay.db"

// RelayLockFileName is the file beside the database that the relay holds
// locked while it uses the store (Options.Exclusive).
const RelayLockFileName = FileName + "-relay"

// ErrInUse is the error of Open with Options.Exclusive while another
// relay uses the store.
var ErrInUse = errors.New("the store is in use by another relay")

// DefaultMaxBatch is the default of Options.MaxBatch.
const DefaultMaxBatch = 256

// Options configure Open.
type Options struct {
	// Sealer encrypts bodies at rest; nil stores them in clear.
	Sealer store.Sealer
	// Logger receives the store's own log lines (never bodies); nil
	// discards them.
	Logger hclog.Logger
	// MaxBatch bounds the messages (or other requests) committed in one
	// transaction; 0 means DefaultMaxBatch.
	MaxBatch int
	// Exclusive is for the relay: it keeps any other relay out of the
	// store while open (ErrInUse). Two relays on one store would take
	// each other's leases for their own (both are named after the host)
	// and deliver the same messages. The `oauthrelay queue` commands
	// open the store beside the relay without it.
	Exclusive bool

	// maxPageCount, when set, caps the database size (PRAGMA
	// max_page_count) so that tests can fill it up.
	maxPageCount int
}

// Store is the SQLite engine of store.Store.
type Store struct {
	path   string
	log    hclog.Logger
	sealer store.Sealer
	keys   *engine.KeyCache

	relayLock *os.File // held while open with Options.Exclusive
	wdb       *sql.DB  // the writer's single connection
	rdb       *sql.DB  // read-only connections
	reads     readStmts
	turn      *turnstile

	group      *engine.GroupCommit[*request]
	writerDone chan struct{}
	closeOnce  sync.Once
	closed     atomic.Bool

	commits  atomic.Uint64
	enqueued atomic.Uint64
	// walPagesWritten counts the pages commits wrote to the WAL (for the
	// benchmarks: pages per message is what a commit's writes cost).
	walPagesWritten atomic.Uint64
	// fallbacks counts batches run again with savepoints after a request
	// failed without (writer.run).
	fallbacks atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// Open opens (creating when missing) the store in the directory path: the
// directory is created with mode 0700, the database file with 0600. It
// applies the embedded migrations and refuses a database whose schema is
// newer than this code.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	file, err := prepareFile(path)
	if err != nil {
		return nil, err
	}
	s := newStore(path, opts)
	if opts.Exclusive {
		if s.relayLock, err = lockRelay(filepath.Join(path, RelayLockFileName)); err != nil {
			return nil, err
		}
	}
	s.warnIfReadable(file)
	useFdatasync(s.log)
	if err := s.openDatabases(ctx, file, opts.maxPageCount); err != nil {
		s.closeDatabases()
		return nil, err
	}
	go s.writeLoop()
	return s, nil
}

func newStore(path string, opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	return &Store{
		path:       path,
		log:        log.Named("store"),
		sealer:     opts.Sealer,
		keys:       engine.NewKeyCache(opts.Sealer),
		group:      engine.NewGroupCommit[*request](maxBatch, 0),
		writerDone: make(chan struct{}),
	}
}

// prepareFile creates the directory (0700) and the database file (0600)
// when missing, so that SQLite, which creates files with the process's
// umask, never makes a readable one; its -wal and -shm files take the
// database file's mode.
func prepareFile(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("store: no path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("store: creating %s: %w", dir, err)
	}
	file := filepath.Join(dir, FileName)
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("store: opening %s: %w", file, err)
	}
	return file, f.Close()
}

// warnIfReadable warns about a database file that other users may read:
// it holds envelopes and, without a Sealer, bodies. An existing file's
// mode is the operator's; only new files are made private.
func (s *Store) warnIfReadable(file string) {
	if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("the database file is accessible to other users", "path", file, "mode", fi.Mode().Perm())
	}
}

func (s *Store) openDatabases(ctx context.Context, file string, maxPageCount int) error {
	var err error
	if s.turn, err = openTurnstile(filepath.Join(s.path, TurnFileName)); err != nil {
		return err
	}
	if s.wdb, err = openWriter(ctx, file, maxPageCount); err != nil {
		return err
	}
	var mayMigrate func(current, latest int) error
	if s.relayLock == nil {
		mayMigrate = s.noRelayRunning
	}
	if err := migrate(ctx, s.wdb, s.log, mayMigrate); err != nil {
		return err
	}
	if s.rdb, err = openReaders(ctx, file); err != nil {
		return err
	}
	return s.reads.prepare(ctx, s.rdb)
}

// noRelayRunning keeps a process other than the relay (a queue command
// of a newer oauthrelay, installed before the relay was restarted) from
// migrating the store under the relay still running on it, which would
// go on with a schema it does not know.
func (s *Store) noRelayRunning(current, latest int) error {
	who, running := relayHolding(filepath.Join(s.path, RelayLockFileName))
	if !running {
		return nil
	}
	return fmt.Errorf("%w%s: the store's schema is version %d and this oauthrelay's is %d; a relay of this version migrates the store as it starts (try again in a moment), an older one must be restarted with this version first",
		ErrInUse, who, current, latest)
}

func (s *Store) closeDatabases() error {
	var errs []error
	s.reads.close()
	for _, db := range []*sql.DB{s.rdb, s.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if s.turn != nil {
		errs = append(errs, s.turn.close())
	}
	if s.relayLock != nil {
		errs = append(errs, s.relayLock.Close()) // drops the lock
	}
	return errors.Join(errs...)
}

// Close commits what the writer has already taken, stops it and closes the
// database. Every later call returns store.ErrUnavailable. Body readers
// still open fail on their next chunk.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.group.Close()
		<-s.writerDone
		err = s.closeDatabases()
	})
	return err
}

// CommitStats returns how many write transactions were committed and how
// many messages they enqueued: messages/commits is the group commit's
// messages per fsync.
func (s *Store) CommitStats() (commits, messages uint64) {
	return s.commits.Load(), s.enqueued.Load()
}

// readable fails once the store is closed.
func (s *Store) readable() error {
	if s.closed.Load() {
		return engine.ErrClosed
	}
	return nil
}

var fdatasyncOnce sync.Once

// useFdatasync makes SQLite commit with fdatasync(2) instead of fsync(2),
// as the SQLite of every Linux distribution does: it makes the data and
// the size of the WAL durable as fsync does, but not its modification
// time, whose journal update a commit otherwise waits for. The WAL is
// rewritten in place after each checkpoint, so its size seldom changes.
// The setting is process-wide, hence once.
func useFdatasync(log hclog.Logger) {
	fdatasyncOnce.Do(func() {
		if _, err := sqlite.Fdatasync(true); err != nil {
			log.Debug("commits use fsync", "reason", err)
		}
	})
}
