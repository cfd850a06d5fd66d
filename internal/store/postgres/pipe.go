package postgres

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// pipeBytes is how much body data the writer queues before it sends the
// statements: a batch of small messages goes in one round trip, and the
// memory a batch holds stays bounded.
const pipeBytes = 1 << 20

// stmt is a statement queued in a pipe.
type stmt struct {
	sql  string
	args []any
	req  int                     // the request it belongs to; -1: the batch itself
	scan func(row pgx.Row) error // reads its row; nil: no row
	// fail classifies its error when it is the request's fault (a
	// duplicate ID); nil: mapErr.
	fail func(err error) error
}

// pipe is one transaction of the writer: it queues the statements of the
// batch's requests and sends them in pipelines (one round trip each),
// BEGIN with the first. With more than one request, each runs in the
// savepoint "request": when one of its statements fails, the transaction
// goes back to the savepoint, the request gets the error, and the
// statements of the requests after it, which the failure skipped, are
// sent again.
type pipe struct {
	s          *Store
	ctx        context.Context
	conn       *pgxpool.Conn
	tx         pgx.Tx // once BEGIN was sent
	savepoints bool
	results    []error // each request's own result
	sent       []bool  // a statement of the request reached the database
	stmts      []stmt  // queued, not yet sent
	bytes      int     // body bytes queued
	done       int     // statements of the last pipeline that succeeded
	begun      bool
	key        *engine.SealKey // the batch's data key, once stored
	bufs       *bodyBuffers
}

// bodyBuffers are the buffers a body is read and sealed in, reused from
// one message to the next by one goroutine.
type bodyBuffers struct {
	chunker engine.Chunker
	sealer  engine.ChunkSealer
}

func (p *pipe) queue(st stmt) { p.stmts = append(p.stmts, st) }

// open starts request i: its savepoint.
func (p *pipe) open(i int) {
	if p.savepoints {
		p.queue(stmt{sql: "SAVEPOINT request", req: i})
	}
}

// close ends request i, unless it failed.
func (p *pipe) close(i int) {
	if p.savepoints && p.results[i] == nil {
		p.queue(stmt{sql: "RELEASE SAVEPOINT request", req: i})
	}
}

// flushIfFull sends the statements once they hold pipeBytes of data.
func (p *pipe) flushIfFull() error {
	if p.bytes < pipeBytes {
		return nil
	}
	return p.flush()
}

// flush sends the queued statements until every one has run or belongs
// to a request that failed. Its error is one that fails the whole batch.
func (p *pipe) flush() error {
	for len(p.stmts) > 0 {
		err := p.send()
		p.bytes = 0
		if err == nil {
			clear(p.stmts)
			p.stmts, p.done = p.stmts[:0], 0
			return nil
		}
		if err := p.recover(err); err != nil {
			return err
		}
	}
	return nil
}

// send sends the queued statements in one pipeline.
func (p *pipe) send() error {
	b := &pgx.Batch{}
	if p.tx == nil {
		b.BeginTx(pgx.TxOptions{})
		b.QueuedQueries[0].Exec(func(pgconn.CommandTag) error { p.begun = true; return nil })
	}
	p.done = 0
	for k := range p.stmts {
		st := &p.stmts[k]
		if st.req >= 0 {
			p.sent[st.req] = true
		}
		q := b.Queue(st.sql, st.args...)
		if st.scan != nil {
			q.QueryRow(func(row pgx.Row) error {
				if err := st.scan(row); err != nil {
					return err
				}
				p.done = k + 1
				return nil
			})
			continue
		}
		q.Exec(func(pgconn.CommandTag) error { p.done = k + 1; return nil })
	}
	br := p.conn.SendBatch(p.ctx, b)
	if p.tx == nil {
		p.tx = br.Tx()
	}
	return br.Close()
}

// recover handles err, the failure of statement p.done of the last
// pipeline: when it is a request's own fault and the request has a
// savepoint, the transaction goes back to it and the statements after
// the request's stay queued; else the whole batch fails.
func (p *pipe) recover(err error) error {
	if !p.begun {
		return p.s.mapErr("beginning a transaction", err)
	}
	if p.done >= len(p.stmts) { // every statement ran; the pipeline's end failed
		return p.s.mapErr("writing", err)
	}
	culprit := p.stmts[p.done]
	if culprit.req < 0 || !isCallerData(err) {
		return p.s.mapErr("writing", err)
	}
	own := p.s.mapErr("writing", err)
	if culprit.fail != nil {
		own = culprit.fail(err)
	}
	if !p.savepoints {
		p.results[culprit.req] = own
		return own
	}
	return p.abandonSent(culprit.req, own)
}

// abandon records that request i failed with err and takes back what it
// wrote. Its error is one that fails the whole batch: a lone request
// (without a savepoint) whose statements reached the database fails the
// transaction.
func (p *pipe) abandon(i int, err error) error {
	if !p.sent[i] {
		p.results[i] = err
		p.drop(i)
		return nil
	}
	if !p.savepoints {
		p.results[i] = err
		return err
	}
	return p.abandonSent(i, err)
}

// abandonSent rolls the transaction back to request i's savepoint and
// drops its statements still queued.
func (p *pipe) abandonSent(i int, err error) error {
	p.results[i] = err
	p.drop(i)
	if _, xerr := p.tx.Exec(p.ctx, "ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request"); xerr != nil {
		return p.s.mapErr("writing", xerr)
	}
	return nil
}

// drop removes the queued statements of request i, and those of the last
// pipeline that ran.
func (p *pipe) drop(i int) {
	kept := p.stmts[:0]
	for k, st := range p.stmts {
		if st.req != i && k >= p.done {
			kept = append(kept, st)
		}
	}
	clear(p.stmts[len(kept):])
	p.stmts, p.done = kept, 0
}

// commit commits the transaction when a request succeeded; else it
// leaves it to the rollback.
func (p *pipe) commit() (committed bool, err error) {
	if p.tx == nil || !slices.Contains(p.results, nil) {
		return false, nil
	}
	if err := p.tx.Commit(p.ctx); err != nil {
		return false, p.s.mapErr("committing", err)
	}
	return true, nil
}
