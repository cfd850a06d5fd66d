package postgres

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Request states: the writer takes a request or its caller, whose context
// ended first, abandons it; never both.
const (
	requestPending int32 = iota
	requestTaken
	requestAbandoned
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
	ctx    context.Context
	msgs   []*store.NewMessage
	envs   []store.Envelope // the messages' envelopes, checked
	recs   []*store.Record
	events []*store.Event
	state  atomic.Int32
	done   chan error // buffered: the writer never waits for the caller
}

// weight is the request's share of Options.MaxBatch.
func (r *request) weight() int { return max(1, len(r.msgs), len(r.recs)+len(r.events)) }

// submit hands r to the writer and waits for its answer. A caller whose
// context ends before the writer takes the request gets the context's
// error and the request is dropped; once taken, the caller waits for the
// commit (the writer may be reading the caller's body).
func (s *Store) submit(ctx context.Context, r *request) error {
	r.ctx, r.done = ctx, make(chan error, 1)
	select {
	case s.requests <- r:
	case <-s.closing:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(requestPending, requestAbandoned) {
			return ctx.Err()
		}
		return <-r.done
	case <-s.writerDone:
		return lastAnswer(r)
	}
}

// lastAnswer is r's answer once the writer has stopped: every request it
// took was answered before it stopped; one left in the channel was not.
func lastAnswer(r *request) error {
	select {
	case err := <-r.done:
		return err
	default:
		return errClosed
	}
}

// writeLoop is the writer goroutine: it commits the requests waiting, in
// batches, until Close; then it commits what is left in the channel.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	for {
		select {
		case r := <-s.requests:
			s.commitTaken(s.collect([]*request{r}))
		case <-s.closing:
			for batch := s.collect(nil); len(batch) > 0; batch = s.collect(nil) {
				s.commitTaken(batch)
			}
			return
		}
	}
}

// collect adds the requests waiting in the channel to batch, up to
// MaxBatch messages and maxRequests requests, without waiting for more:
// the batch is whatever accumulated while the previous commit ran.
func (s *Store) collect(batch []*request) []*request {
	n := 0
	for _, r := range batch {
		n += r.weight()
	}
	for n < s.maxBatch && len(batch) < maxRequests {
		select {
		case r := <-s.requests:
			batch = append(batch, r)
			n += r.weight()
		default:
			return batch
		}
	}
	return batch
}

// commitTaken commits the requests of batch whose callers still wait,
// and answers them.
func (s *Store) commitTaken(batch []*request) {
	var live []*request
	for _, r := range batch {
		if !r.state.CompareAndSwap(requestPending, requestTaken) {
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	for i, err := range s.runBatch(ctx, live, &s.writerBufs) {
		live[i].done <- err
	}
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
		return errClosed
	}
	defer func() { <-s.solo }()
	r.ctx = ctx
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	return s.runBatch(ctx, []*request{r}, &bodyBuffers{})[0]
}
