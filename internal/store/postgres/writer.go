package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

const (
	// maxRequests bounds the requests of one batch, each of which runs in
	// a savepoint: PostgreSQL keeps the subtransactions of up to 64 in
	// each session's shared memory, and more would make every other
	// session's snapshots consult pg_subtrans.
	maxRequests = 64
	// batchTimeout bounds one transaction of the writer.
	batchTimeout = time.Minute
)

// request is one write waiting for the writer: the messages of an
// Enqueue, or the records and events of a Record.
type request struct {
	engine.Request
	msgs   []*store.NewMessage
	envs   []store.Envelope // the messages' envelopes, checked
	recs   []*store.Record
	events []*store.Event
}

// Weight is the request's share of Options.MaxBatch.
func (r *request) Weight() int { return max(1, len(r.msgs), len(r.recs)+len(r.events)) }

// submit hands r to the writer and waits for its answer
// (engine.GroupCommit.Submit).
func (s *Store) submit(ctx context.Context, r *request) error {
	return s.group.Submit(ctx, r)
}

// writeLoop is the writer goroutine.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	var bufs bodyBuffers
	s.group.Run(func(batch []*request) {
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		defer cancel()
		for i, err := range s.runBatch(ctx, batch, &bufs) {
			batch[i].Answer(err)
		}
	})
}

// runSolo commits r in a transaction of its own, in the caller's
// goroutine: a call whose bodies are large spends its time streaming
// them, and the other writes must not wait behind it. At most a quarter
// of the pool's connections do so at once.
func (s *Store) runSolo(ctx context.Context, r *request) error {
	select {
	case s.solo <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return engine.ErrClosed
	}
	defer func() { <-s.solo }()
	r.SetContext(ctx)
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	return s.runBatch(ctx, []*request{r}, &bodyBuffers{})[0]
}

// runBatch runs reqs in one transaction and returns each one's result.
func (s *Store) runBatch(ctx context.Context, reqs []*request, bufs *bodyBuffers) []error {
	results := make([]error, len(reqs))
	committed, err := s.runPipe(ctx, reqs, bufs, results)
	if err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
		return results
	}
	if !committed {
		return results
	}
	s.commits.Add(1)
	for i, r := range reqs {
		if results[i] == nil {
			s.enqueued.Add(uint64(len(r.msgs)))
		}
	}
	return results
}

// runPipe runs reqs in one transaction on a connection of its own,
// filling results with each request's own failure; its error is one
// that fails them all.
func (s *Store) runPipe(ctx context.Context, reqs []*request, bufs *bodyBuffers, results []error) (committed bool, err error) {
	key, keyErr := s.batchKey(reqs)
	c, err := s.acquire(ctx, "writing")
	if err != nil {
		return false, err
	}
	defer c.Release()
	p := &pipe{s: s, ctx: ctx, conn: c, savepoints: len(reqs) > 1, results: results,
		sent: make([]bool, len(reqs)), bufs: bufs}
	defer func() {
		if p.tx != nil {
			rollback(p.tx)
		}
	}()
	if key != nil {
		if err := p.storeKey(key); err != nil {
			return false, err
		}
	}
	for i, r := range reqs {
		if len(r.msgs) > 0 && keyErr != nil {
			results[i] = keyErr
			continue
		}
		if err := p.write(i, r); err != nil {
			return false, err
		}
	}
	if err := p.flush(); err != nil {
		return false, err
	}
	return p.commit()
}

// write queues request i's statements, reading its bodies.
func (p *pipe) write(i int, r *request) error {
	p.open(i)
	if len(r.msgs) > 0 {
		if err := p.enqueue(i, r); err != nil {
			return err
		}
	} else {
		p.record(i, r)
	}
	p.close(i)
	return p.flushIfFull()
}

// batchKey draws the batch's data key before its transaction begins, when
// the store seals bodies and a request stores some: drawing may wait on
// Vault, and no connection should wait with it.
func (s *Store) batchKey(reqs []*request) (*engine.DrawnKey, error) {
	if s.sealer == nil {
		return nil, nil
	}
	for _, r := range reqs {
		if len(r.msgs) > 0 {
			key, err := engine.DrawKey(s.sealer)
			if err != nil {
				s.log.Error("cannot seal bodies: messages are refused", "error", err)
				return nil, err
			}
			return &key, nil
		}
	}
	return nil, nil
}

// storeKey stores the batch's wrapped key, in the first round trip.
func (p *pipe) storeKey(key *engine.DrawnKey) error {
	p.queue(stmt{sql: `INSERT INTO data_keys (wrapped) VALUES ($1) RETURNING id`, args: []any{key.Wrapped}, req: -1,
		scan: func(row pgx.Row) error { return row.Scan(&key.ID) }})
	if err := p.flush(); err != nil {
		return err
	}
	p.key = &key.SealKey
	return nil
}
