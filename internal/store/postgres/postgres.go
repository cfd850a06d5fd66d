// Package postgres is the store engine for several relay instances that
// share one PostgreSQL database (README "Several instances"), through
// github.com/jackc/pgx/v5 and its connection pool.
//
// Writes of Enqueue and Record go through one writer goroutine (group
// commit): the requests waiting when it is ready, up to Options.MaxBatch
// messages, share one transaction and so one WAL flush; with more than one
// request in a batch each runs inside a savepoint of its own, so that a
// request that fails leaves the others alone. Statements are sent as
// pipelines, so a batch of small messages costs two round trips (BEGIN
// and its statements, COMMIT), three when sealed. A call
// whose bodies are declared larger than a chunk commits on its own instead
// (writer.go). Every other method is one short transaction of its own.
//
// Claim takes due messages with SELECT ... FOR UPDATE SKIP LOCKED and
// leases them (owner and lease end); an expired lease is taken over by
// the next claim, and Extend and Finish check that the lease is still the
// caller's. Times come from the callers' clocks, which instances must
// keep in sync (NTP).
//
// Bodies are stored in chunks of engine.ChunkSize bytes (bytea), read from
// the message inside the commit and back chunk by chunk, so that no
// message is ever held in memory whole; with a Sealer every chunk is
// encrypted as package engine describes.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

const (
	// DefaultMaxConns is the default of Options.MaxConns.
	DefaultMaxConns = 10
	// DefaultMaxBatch is the default of Options.MaxBatch.
	DefaultMaxBatch = 256
)

// ErrNewerSchema: the database was written by a newer oauthrelay, whose
// schema this one does not know. Open refuses it rather than guess.
var ErrNewerSchema = engine.ErrNewerSchema

// Options configure Open.
type Options struct {
	// Sealer encrypts bodies at rest; nil stores them in clear.
	Sealer store.Sealer
	// Logger receives the store's own log lines (never bodies or
	// secrets); nil discards them.
	Logger hclog.Logger
	// MaxConns bounds the pool's connections; 0 means DefaultMaxConns.
	MaxConns int
	// MaxBatch bounds the messages (or history items) committed in one
	// transaction of the writer; 0 means DefaultMaxBatch.
	MaxBatch int
	// Role, when set, is the role every connection takes (SET ROLE) as
	// soon as it is open, so that the tables belong to that one role
	// whichever user logged in: short-lived users issued by Vault's
	// database secrets engine come and go, the schema's owner stays.
	Role string
	// Credentials, when set, gives the user and password of every new
	// connection (Vault-issued dynamic credentials); they replace those
	// of the DSN. After a renewal, RotateConnections moves the pool to
	// the new ones.
	Credentials func(ctx context.Context) (user, password string, err error)
	// NoMigrate opens the database without changing its schema (the
	// commands that run beside the relay: `oauthrelay check`, `oauthrelay
	// queue`): a schema older than this code is an error that says to
	// start the relay, which migrates; a newer one is refused as always.
	NoMigrate bool
}

// Store is the PostgreSQL engine of store.Store.
type Store struct {
	pool    *pgxpool.Pool
	log     hclog.Logger
	sealer  store.Sealer
	keys    *engine.KeyCache
	secrets *secrets // passwords that must never appear in an error

	group *engine.GroupCommit[*request]
	// solo bounds the calls that commit on their own at once (large
	// bodies): each holds a connection while it streams.
	solo       chan struct{}
	closing    chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
	closed     atomic.Bool

	commits  atomic.Uint64
	enqueued atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// Open connects to the database of dsn (a PostgreSQL connection URI or
// key=value string), applies the embedded migrations (unless
// opts.NoMigrate) and refuses a database whose schema is newer than this
// code. Migrating is bounded by ctx alone: an index built on a large
// history may take minutes, while other instances keep working (the
// migrator type). Its errors never contain
// the DSN's password or the Credentials' passwords; when the database
// cannot be reached they wrap store.ErrUnavailable.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	s := newStore(opts)
	pool, err := s.newPool(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	prepare := migrate
	if opts.NoMigrate {
		prepare = checkSchema
	}
	if err := prepare(ctx, s); err != nil {
		pool.Close()
		return nil, err
	}
	go s.writeLoop()
	return s, nil
}

func newStore(opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return &Store{
		log:        log.Named("store"),
		sealer:     opts.Sealer,
		keys:       engine.NewKeyCache(opts.Sealer),
		secrets:    &secrets{},
		group:      engine.NewGroupCommit[*request](maxBatch, maxRequests),
		solo:       make(chan struct{}, max(1, maxConns/4)),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// Close commits what was submitted to the writer, stops it, and closes
// the pool once the calls in flight are done. Every later call returns
// store.ErrUnavailable. Body readers still open fail on their next chunk.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.closing)
		s.group.Close()
		<-s.writerDone
		s.pool.Close()
	})
	return nil
}

// RotateConnections makes the pool open new connections, with the
// current Credentials, without dropping work in flight: idle connections
// close at once, those in use when they are given back (pgxpool's Reset).
func (s *Store) RotateConnections() {
	s.pool.Reset()
}

// CommitStats returns how many transactions the writer (and the
// Enqueues of large messages) committed and how many messages they
// enqueued: messages/commits is the group commit's messages per WAL flush.
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

// opTimeout bounds a call whose context has no deadline: pgx waits on a
// dead connection as long as the context lets it, and a worker must not
// hang on a database that went away without closing the connection.
// Migrations are the exception (migrator): an index build may rightly
// take longer.
const opTimeout = time.Minute

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, opTimeout)
}

// errNoOwner is the error for a lease of the empty owner, which no one
// holds.
func errNoOwner(id string) error {
	return fmt.Errorf("%w: %s: no owner", store.ErrLeaseLost, id)
}

var errBadClaim = errors.New("store: claim needs an owner and a positive lease")
