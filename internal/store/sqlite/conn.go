package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
)

// The writer runs its transactions by hand on a connection of its own
// (BEGIN IMMEDIATE ... COMMIT), so that the statements it prepares once on
// that connection serve every transaction: database/sql re-prepares a
// statement for each *sql.Tx, and parsing was a fifth of the writer's
// time.

// begin starts a write transaction, taking the write lock at once so that
// it never fails half-way for another process's write. It lets a writer
// of another process that waits go first, and when it has to wait itself
// it says so and polls (see turn.go), up to the busy timeout.
func (w *writer) begin() error {
	if err := w.connect(); err != nil {
		return err
	}
	w.s.turn.yield()
	err := w.tryBegin()
	if isBusy(err) {
		err = w.waitBegin()
	}
	return w.connErr("beginning a transaction", err)
}

func (w *writer) tryBegin() error {
	_, err := w.conn.ExecContext(context.Background(), "BEGIN IMMEDIATE")
	return err
}

func (w *writer) waitBegin() error {
	defer w.s.turn.announce()()
	return retryBusy(context.Background(), w.tryBegin)
}

// connect takes the writer's connection when it has none. The writer
// polls for the write lock itself (waitBegin): SQLite's busy handler,
// which sleeps up to 100 ms between attempts, is turned off for it.
func (w *writer) connect() error {
	if w.conn != nil {
		return nil
	}
	conn, err := w.s.wdb.Conn(context.Background())
	if err != nil {
		return mapErr("connecting", err)
	}
	if _, err := conn.ExecContext(context.Background(), "PRAGMA busy_timeout = 0"); err != nil {
		conn.Close()
		return mapErr("connecting", err)
	}
	w.conn, w.stmts = conn, map[string]*sql.Stmt{}
	return nil
}

// commitTx commits; when COMMIT fails, the transaction is rolled back.
func (w *writer) commitTx() error {
	if _, err := w.conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		w.rollback()
		return w.connErr("committing", err)
	}
	return nil
}

// rollback ends the transaction; SQLite may have ended it already.
func (w *writer) rollback() {
	_, err := w.conn.ExecContext(context.Background(), "ROLLBACK")
	_ = w.connErr("rolling back", err)
}

// connErr classifies err and, when the connection itself is broken,
// drops it: the next transaction takes a new one.
func (w *writer) connErr(op string, err error) error {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		w.closeConn()
	}
	return mapErr(op, err)
}

func (w *writer) closeConn() {
	if w.conn == nil {
		return
	}
	for _, st := range w.stmts {
		_ = st.Close()
	}
	_ = w.conn.Close()
	w.conn, w.stmts = nil, nil
}

// stmt returns query prepared on the writer's connection. The writer's
// queries are constants, so the cache is bounded by their number.
func (w *writer) stmt(query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, err
	}
	w.stmts[query] = st
	return st, nil
}

// execResult runs a statement of the current transaction.
func (b *batch) execResult(query string, args ...any) (sql.Result, error) {
	st, err := b.w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.Exec(args...)
}

func (b *batch) exec(query string, args ...any) error {
	_, err := b.execResult(query, args...)
	return err
}

// execOp runs a statement, classifying its error.
func (b *batch) execOp(op, query string, args ...any) error {
	return mapErr(op, b.exec(query, args...))
}

func (b *batch) query(query string, args ...any) (*sql.Rows, error) {
	st, err := b.w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.Query(args...)
}

func (b *batch) queryRow(query string, args ...any) *sql.Row {
	st, err := b.w.stmt(query)
	if err != nil {
		// The same query outside the cache reports the same error.
		return b.w.conn.QueryRowContext(context.Background(), query, args...)
	}
	return st.QueryRow(args...)
}
