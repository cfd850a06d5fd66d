package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// request is one write waiting for the writer goroutine.
type request struct {
	engine.Request
	messages int  // messages it enqueues (CommitStats)
	items    int  // other rows it writes (history), for MaxBatch
	bodies   bool // it writes bodies: it needs the batch's data key
	run      func(b *batch) error
	// rewind, for a request that reads bodies, makes them readable from
	// their start again; nil when it reads none, false when it cannot.
	// rewindable tells beforehand that it can.
	rewind     func() bool
	rewindable bool
}

// Weight is the request's share of Options.MaxBatch.
func (r *request) Weight() int { return max(1, r.messages, r.items) }

// batch is one write transaction of the writer and what its requests share.
type batch struct {
	w      *writer
	key    *engine.SealKey // the batch's data key, drawn when first needed
	keyErr error
	// drawn is the data key drawn before the transaction began (a sealer
	// that waits on Vault must not hold the write lock meanwhile).
	drawn  *engine.DrawnKey
	broken error // set when SQLite rolled the whole transaction back
}

// writer is the state of the writer goroutine.
type writer struct {
	s     *Store
	conn  *sql.Conn            // its own connection; nil until needed
	stmts map[string]*sql.Stmt // statements prepared on conn
	// walPages counts the pages written to the WAL since the last
	// checkpoint (checkpoint.go).
	walPages int
	chunker  engine.Chunker     // the body being read
	sealer   engine.ChunkSealer // its chunks sealed
}

// submit hands r to the writer and waits for its answer
// (engine.GroupCommit.Submit).
func (s *Store) submit(ctx context.Context, r *request) error {
	if err := s.readable(); err != nil {
		return err
	}
	return s.group.Submit(ctx, r)
}

// writeLoop is the writer goroutine: it commits the requests waiting, in
// batches, until Close; then it commits what is left and checkpoints.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	w := &writer{s: s}
	defer w.closeConn()
	s.group.Run(w.commit)
	// Leave the database file complete on its own and the WAL empty;
	// another process still using the store keeps it.
	w.checkpoint("TRUNCATE")
}

// maxRounds bounds the transactions one batch may take: a request that
// makes SQLite roll the whole transaction back is left out of the next.
const maxRounds = 4

// commit runs the requests of batch, whose callers wait, in one
// transaction and answers each of them. Most failures stay inside their request's savepoint; but
// on some (disk full, I/O error) SQLite rolls the whole transaction back.
// Then the request that hit it fails, and the others run again in a new
// transaction: those not yet run, those that read no body, and those
// whose bodies can be rewound (io.Seeker).
func (w *writer) commit(reqs []*request) {
	for round := 1; len(reqs) > 0; round++ {
		reqs = w.runRound(reqs, round < maxRounds)
	}
}

// runRound runs reqs in one transaction and answers them, but for those
// to run again, which it returns.
func (w *writer) runRound(reqs []*request, mayRetry bool) []*request {
	results := make([]error, len(reqs))
	culprit, err := w.run(reqs, results)
	if err == nil {
		w.s.commits.Add(1)
		w.s.enqueued.Add(enqueuedBy(reqs, results))
		for i, r := range reqs {
			r.Answer(results[i])
		}
		w.afterCommit()
		return nil
	}
	w.s.log.Warn("write transaction rolled back", "requests", len(reqs), "error", err)
	var again []*request
	for i, r := range reqs {
		switch {
		case i == culprit || (i < culprit && results[i] != nil):
			r.Answer(results[i]) // its own error
		case mayRetry && culprit >= 0 && (i > culprit || r.rerunnable()):
			again = append(again, r)
		default:
			r.Answer(err)
		}
	}
	return again
}

// rerunnable prepares a request that ran in a transaction rolled back
// to run again, and reports whether it can.
func (r *request) rerunnable() bool {
	return r.rewind == nil || r.rewind()
}

func enqueuedBy(live []*request, results []error) uint64 {
	var n uint64
	for i, r := range live {
		if results[i] == nil {
			n += uint64(r.messages)
		}
	}
	return n
}

// run executes the requests in one transaction, filling results. It
// returns the error that failed the whole transaction, and the index of
// the request that hit it (-1 for none: BEGIN or COMMIT failed).
//
// A savepoint per request (two statements each, a seventh of the store's
// time in the benchmark) is needed only when one fails. So a batch whose
// requests can all run again (runFast) runs without them, and when a
// request fails, the transaction is rolled back and the batch runs again
// with a savepoint around each request (runSafe): there the request fails
// alone, and the others commit.
func (w *writer) run(reqs []*request, results []error) (int, error) {
	b := &batch{w: w}
	b.predraw(reqs)
	if allRerunnable(reqs) {
		culprit, err, again := w.runFast(b, reqs, results)
		if !again {
			return culprit, err
		}
		b = &batch{w: w, drawn: b.drawn, keyErr: b.keyErr}
	}
	return w.runSafe(b, reqs, results)
}

func allRerunnable(reqs []*request) bool {
	for _, r := range reqs {
		if r.rewind != nil && !r.rewindable {
			return false
		}
	}
	return true
}

// runFast runs the requests without savepoints. again reports that one
// failed: the transaction is rolled back and the bodies rewound, for
// runSafe.
func (w *writer) runFast(b *batch, reqs []*request, results []error) (culprit int, err error, again bool) {
	if err := w.begin(); err != nil {
		return -1, err, false
	}
	for i, r := range reqs {
		results[i] = b.runBare(r)
		if b.broken != nil {
			w.rollback()
			return i, b.broken, false
		}
		if results[i] != nil {
			w.rollback()
			for _, r := range reqs {
				if !r.rerunnable() {
					return i, fmt.Errorf("%w: a body could not be read again", store.ErrUnavailable), false
				}
			}
			w.s.fallbacks.Add(1)
			return -1, nil, true
		}
	}
	return -1, w.commitTx(), false
}

// runSafe runs each request inside a savepoint of its own.
func (w *writer) runSafe(b *batch, reqs []*request, results []error) (int, error) {
	if err := w.begin(); err != nil {
		return -1, err
	}
	for i, r := range reqs {
		results[i] = b.runOne(r)
		if b.broken != nil {
			w.rollback()
			return i, b.broken
		}
	}
	return -1, w.commitTx()
}

// runBare runs r in the transaction without a savepoint.
func (b *batch) runBare(r *request) error {
	if r.bodies {
		if err := b.ensureKey(); err != nil {
			return err
		}
	}
	return r.run(b)
}

// runOne runs r inside a savepoint: when r fails, only its own changes
// are rolled back. Requests classify their own errors (mapErr).
func (b *batch) runOne(r *request) error {
	if r.bodies {
		if err := b.ensureKey(); err != nil {
			return err
		}
	}
	if err := b.exec("SAVEPOINT request"); err != nil {
		return b.fail(err)
	}
	err := r.run(b)
	if err == nil {
		if err := b.exec("RELEASE request"); err != nil {
			return b.fail(err)
		}
		return nil
	}
	// SQLite rolls the whole transaction back on some errors (disk
	// full, I/O error); then the savepoint is gone with it.
	if rerr := b.exec("ROLLBACK TO request"); rerr != nil {
		return b.fail(err)
	}
	if rerr := b.exec("RELEASE request"); rerr != nil {
		return b.fail(rerr)
	}
	return err
}

// fail marks the batch as broken by err.
func (b *batch) fail(err error) error {
	err = mapErr("transaction aborted", err)
	if !errors.Is(err, store.ErrUnavailable) {
		err = fmt.Errorf("%w: transaction aborted: %w", store.ErrUnavailable, err)
	}
	b.broken = err
	return err
}
