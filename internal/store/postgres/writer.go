package postgres

import (
	"context"
	"time"

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
