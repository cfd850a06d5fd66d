package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// The migrations run while other instances of the previous version keep
// working on the same database (README "Several instances"): no step may
// stop their reads and writes for longer than an instant.
const (
	// migrationLockTimeout bounds the wait for a lock of a statement that
	// is not CONCURRENTLY. Such a lock (ALTER TABLE's) stops every reader
	// and writer of its table, and while it waits behind a long
	// transaction, everyone else waits behind it: it gives up instead,
	// and the step is tried again later.
	migrationLockTimeout = 5 * time.Second
	// migrationAttempts is how many times such a step is tried before the
	// start fails, migrationBackoff the first wait between two tries,
	// doubled each time.
	migrationAttempts = 5
	migrationBackoff  = 2 * time.Second
	// migrationLockPoll is how often an instance whose start waits for
	// another's migration tries the migration lock again.
	migrationLockPoll = 250 * time.Millisecond
	// migrationProgress is how often a statement still running is logged.
	migrationProgress = time.Minute
)

// migrator applies the migrations on one session of its own, under the
// session-level advisory lock migrationLock, released when the session
// ends (it is closed, never given back to the pool). Nothing bounds the
// session's statements but the caller's context (no opTimeout, and no
// statement_timeout the database or role may set): an index built on a
// large history takes as long as it takes. When ctx ends, pgx cancels the
// statement on the server and closes the session; a session whose
// database vanished without closing it ends when TCP keepalive gives up
// on it (Go's default: about two and a half minutes).
//
// A step in a transaction (the default) runs whole, with lock_timeout
// set to lockTimeout; when it times out waiting for a lock, it is rolled
// back and tried again, attempts times in all, after a backoff doubled
// each time. A NoTransaction step (engine.Migration) runs statement by
// statement, each committed on its own, and its version is recorded after
// the last: a statement with CONCURRENTLY waits for its locks as long as
// it must (those locks stop no reader or writer), any other one runs with
// lockTimeout and is tried again as a step is. Before a statement
// CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name, an index of that
// name left invalid by an interrupted build (pg_index.indisvalid) is
// dropped, so that it is built again rather than kept.
type migrator struct {
	s           *Store
	lockTimeout time.Duration
	attempts    int
	backoff     time.Duration
	lockPoll    time.Duration
	progress    time.Duration
}

func newMigrator(s *Store) *migrator {
	return &migrator{s: s, lockTimeout: migrationLockTimeout, attempts: migrationAttempts,
		backoff: migrationBackoff, lockPoll: migrationLockPoll, progress: migrationProgress}
}

// run applies the steps the database lacks, in order. It re-reads the
// version under the lock and refuses a database newer than ms.
func (m *migrator) run(ctx context.Context, ms []engine.Migration) error {
	conn, err := m.session(ctx)
	if err != nil {
		return err
	}
	defer closeSession(conn)
	if err := m.lock(ctx, conn); err != nil {
		return err
	}
	for {
		current, err := m.s.schemaVersion(ctx, conn)
		switch {
		case err != nil:
			return err
		case current > len(ms):
			return engine.NewerSchema(current, len(ms))
		case current == len(ms):
			return nil
		}
		step := ms[current]
		if err := m.apply(ctx, conn, step); err != nil {
			return err
		}
		m.s.log.Info("database schema migrated", "version", step.Version, "migration", step.Name)
	}
}

// session takes a connection of the pool for the migrator alone and lifts
// the database's or role's time limits on its statements.
func (m *migrator) session(ctx context.Context) (*pgx.Conn, error) {
	c, err := m.s.acquire(ctx, "migrating")
	if err != nil {
		return nil, err
	}
	conn := c.Hijack()
	_, err = conn.Exec(ctx, `SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false)`)
	if err != nil {
		closeSession(conn)
		return nil, m.s.readErr(ctx, "migrating", err)
	}
	return conn, nil
}

// closeSession ends the migrator's session, which releases its lock.
func closeSession(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// lock takes migrationLock, waiting while another instance holds it. It
// tries again every lockPoll rather than wait inside pg_advisory_lock: a
// session waiting inside a statement holds a snapshot, and CREATE INDEX
// CONCURRENTLY in the session holding the lock waits for every older
// snapshot to end — a deadlock.
func (m *migrator) lock(ctx context.Context, conn *pgx.Conn) error {
	for waited := false; ; waited = true {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrationLock).Scan(&ok); err != nil {
			return m.s.readErr(ctx, "taking the migration lock", err)
		}
		if ok {
			return nil
		}
		if !waited {
			m.s.log.Info("another instance is migrating the database schema: waiting for it")
		}
		if err := sleepCtx(ctx, m.lockPoll); err != nil {
			return err
		}
	}
}

// apply applies one step and records its version.
func (m *migrator) apply(ctx context.Context, conn *pgx.Conn, step engine.Migration) error {
	if step.NoTransaction {
		return m.applyStatements(ctx, conn, step)
	}
	return m.retry(ctx, step.Name, func() error { return m.applyInTx(ctx, conn, step) })
}

// applyInTx runs a step and records its version in one transaction.
func (m *migrator) applyInTx(ctx context.Context, conn *pgx.Conn, step engine.Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return m.s.readErr(ctx, "migrating", err)
	}
	defer rollback(tx)
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, pgDuration(m.lockTimeout)); err != nil {
		return m.s.readErr(ctx, "migration "+step.Name, err)
	}
	if _, err := tx.Exec(ctx, step.SQL); err != nil {
		return m.s.readErr(ctx, "migration "+step.Name, err)
	}
	if err := m.s.recordVersion(ctx, tx, step); err != nil {
		return err
	}
	return m.s.readErr(ctx, "migration "+step.Name, tx.Commit(ctx))
}

// applyStatements runs a NoTransaction step statement by statement, then
// records its version.
func (m *migrator) applyStatements(ctx context.Context, conn *pgx.Conn, step engine.Migration) error {
	stmts, err := splitStatements(step.SQL)
	if err != nil {
		return fmt.Errorf("migration %s: %w", step.Name, err)
	}
	for _, stmt := range stmts {
		if err := m.dropInvalidIndex(ctx, conn, step, stmt); err != nil {
			return err
		}
		err := m.retry(ctx, step.Name, func() error { return m.runStatement(ctx, conn, step, stmt) })
		if err != nil {
			return err
		}
	}
	return m.s.recordVersion(ctx, conn, step)
}

// concurrently matches the statements that take no lock stopping reads or
// writes: CREATE [UNIQUE] INDEX, DROP INDEX and REINDEX … CONCURRENTLY.
var concurrently = regexp.MustCompile(`(?is)^(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+CONCURRENTLY\b`)

// runStatement runs one statement of a NoTransaction step, with the
// lock_timeout its kind calls for, logging it while it runs long.
func (m *migrator) runStatement(ctx context.Context, conn *pgx.Conn, step engine.Migration, stmt string) error {
	timeout := m.lockTimeout
	if concurrently.MatchString(stmt) {
		timeout = 0
		m.s.log.Info("database schema migration: an index built or dropped while instances go on writing (minutes on a large history)",
			"migration", step.Name, "statement", firstLine(stmt))
	}
	if _, err := conn.Exec(ctx, `SELECT set_config('lock_timeout', $1, false)`, pgDuration(timeout)); err != nil {
		return m.s.readErr(ctx, "migration "+step.Name, err)
	}
	defer m.logWhileRunning(step, stmt)()
	_, err := conn.Exec(ctx, stmt)
	return m.s.readErr(ctx, "migration "+step.Name, err)
}

// logWhileRunning logs a statement every progress while it runs (an
// index build on a large history, or one that waits for transactions
// older than it to end); the returned function stops it.
func (m *migrator) logWhileRunning(step engine.Migration, stmt string) (stop func()) {
	start, first := time.Now(), firstLine(stmt)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(m.progress)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				m.s.log.Info("database schema migration still running", "migration", step.Name, "statement", first,
					"running", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// createIndex matches CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS and
// captures the index's name.
var createIndex = regexp.MustCompile(`(?is)^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+("(?:[^"]|"")+"|[\w$.]+)`)

// dropInvalidIndex drops the index stmt builds when an earlier build of
// it was interrupted (its statement cancelled, its session killed): such
// an index is left in the catalog, marked invalid, updated by every write
// and never read, and IF NOT EXISTS would keep it. No other session builds
// it meanwhile: only migrations do, under the lock this one holds.
func (m *migrator) dropInvalidIndex(ctx context.Context, conn *pgx.Conn, step engine.Migration, stmt string) error {
	match := createIndex.FindStringSubmatch(stmt)
	if match == nil {
		return nil
	}
	name := match[1]
	var invalid bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid)`, name).Scan(&invalid)
	if err != nil || !invalid {
		return m.s.readErr(ctx, "migration "+step.Name, err)
	}
	m.s.log.Warn("an interrupted build left an invalid index: dropping it to build it again", "migration", step.Name, "index", name)
	return m.runStatement(ctx, conn, step, "DROP INDEX CONCURRENTLY IF EXISTS "+name)
}

// retry runs apply again while it fails for a lock_timeout, up to
// m.attempts times in all, waiting m.backoff (then twice as long, …)
// between two tries.
func (m *migrator) retry(ctx context.Context, name string, apply func() error) error {
	wait := m.backoff
	for attempt := 1; ; attempt++ {
		err := apply()
		if !isLockTimeout(err) {
			return err
		}
		if attempt == m.attempts {
			return fmt.Errorf("%w (waited %v for a lock %d times: a long transaction holds it; pg_locks and pg_stat_activity show which)",
				err, m.lockTimeout, attempt)
		}
		m.s.log.Warn("a database schema migration gave up waiting for a lock other sessions hold: trying again",
			"migration", name, "attempt", attempt, "lock_timeout", m.lockTimeout, "retry_in", wait)
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
		wait *= 2
	}
}

// isLockTimeout reports an error of lock_timeout (SQLSTATE 55P03,
// lock_not_available).
func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// pgDuration is d as a PostgreSQL time setting, in milliseconds (0: no
// limit).
func pgDuration(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// sleepCtx waits for d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
