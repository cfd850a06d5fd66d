package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// ErrClosed is the error of every call to a store that was closed.
var ErrClosed = fmt.Errorf("%w: closed", store.ErrUnavailable)

// Request states: the writer takes a request or its caller, whose context
// ended first, abandons it; never both.
const (
	requestPending int32 = iota
	requestTaken
	requestAbandoned
)

// Request is what the write requests of a GroupCommit embed: the
// caller's context and the channel of its answer.
type Request struct {
	ctx   context.Context
	state atomic.Int32
	done  chan error // buffered: the writer never waits for the caller
}

func (r *Request) request() *Request { return r }

// Context is the context of the call that made the request.
func (r *Request) Context() context.Context { return r.ctx }

// SetContext sets the context of a request an engine runs itself,
// without Submit.
func (r *Request) SetContext(ctx context.Context) { r.ctx = ctx }

// Answer gives the caller the request's result. The writer answers each
// request it is given once.
func (r *Request) Answer(err error) { r.done <- err }

// Pending is a write request of a GroupCommit: a pointer to a struct
// that embeds Request.
type Pending interface {
	request() *Request
	// Weight is the request's share of a batch (messages or rows).
	Weight() int
}

// GroupCommit is the queue between the callers of an engine's writes and
// its writer goroutine (group commit): callers submit requests and wait;
// the writer takes those waiting when it is ready, as one batch, which it
// commits in one transaction (one flush to disk) and answers.
type GroupCommit[P Pending] struct {
	requests  chan P
	closing   chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	maxWeight int // of a batch
	maxCount  int // requests of a batch, 0: no bound
}

// NewGroupCommit returns a queue whose batches weigh up to maxWeight and
// count up to maxCount requests (0: no bound).
func NewGroupCommit[P Pending](maxWeight, maxCount int) *GroupCommit[P] {
	return &GroupCommit[P]{
		requests:  make(chan P, 4*maxWeight), // a few batches: callers seldom block sending
		closing:   make(chan struct{}),
		stopped:   make(chan struct{}),
		maxWeight: maxWeight,
		maxCount:  maxCount,
	}
}

// Submit hands p to the writer and waits for its answer. A caller whose
// context ends before the writer takes the request gets the context's
// error and the request is dropped; once taken, the caller waits for the
// commit (the writer may be reading the caller's body).
func (g *GroupCommit[P]) Submit(ctx context.Context, p P) error {
	r := p.request()
	r.ctx, r.done = ctx, make(chan error, 1)
	select {
	case g.requests <- p:
	case <-g.closing:
		return ErrClosed
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
	case <-g.stopped:
		// Every request the writer took was answered before it stopped;
		// one left in the channel was not.
		select {
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// Run is the writer goroutine: it hands commit the requests waiting, in
// batches, until Close; then what is left in the channel. commit answers
// each request of its batch, whose callers all still wait.
func (g *GroupCommit[P]) Run(commit func(batch []P)) {
	defer close(g.stopped)
	for {
		select {
		case p := <-g.requests:
			g.commitLive(commit, g.collect([]P{p}))
		case <-g.closing:
			for batch := g.collect(nil); len(batch) > 0; batch = g.collect(nil) {
				g.commitLive(commit, batch)
			}
			return
		}
	}
}

// Waiting counts the requests submitted that the writer has not taken.
func (g *GroupCommit[P]) Waiting() int { return len(g.requests) }

// Close makes Run commit what was submitted and return, and every later
// Submit fail with ErrClosed. It does not wait for Run.
func (g *GroupCommit[P]) Close() {
	g.closeOnce.Do(func() { close(g.closing) })
}

// collect adds the requests waiting in the channel to batch, up to the
// bounds, without waiting for more: the batch is whatever accumulated
// while the previous commit ran.
func (g *GroupCommit[P]) collect(batch []P) []P {
	n := 0
	for _, p := range batch {
		n += p.Weight()
	}
	for n < g.maxWeight && (g.maxCount == 0 || len(batch) < g.maxCount) {
		select {
		case p := <-g.requests:
			batch = append(batch, p)
			n += p.Weight()
		default:
			return batch
		}
	}
	return batch
}

// commitLive marks the requests as taken and commits them, leaving out
// those their callers abandoned and answering those whose context ended.
func (g *GroupCommit[P]) commitLive(commit func([]P), batch []P) {
	var live []P
	for _, p := range batch {
		r := p.request()
		if !r.state.CompareAndSwap(requestPending, requestTaken) {
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.Answer(err)
			continue
		}
		live = append(live, p)
	}
	if len(live) > 0 {
		commit(live)
	}
}
