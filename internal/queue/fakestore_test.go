package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// fakeStore is an in-memory store.Store with the documented semantics
// (leases, Claim's order and skip list, Finish's final states and body
// removal, history) and hooks to inject failures.
type fakeStore struct {
	mu      sync.Mutex
	msgs    map[string]*fakeMsg
	records map[string]*store.Record
	events  []*store.Event
	closed  bool

	// Hooks, called with mu held; a non-nil error fails the call.
	enqueueErr func(m *store.NewMessage) error
	claimErr   func() error
	finishErr  func(id string) error
	bodyErr    error
	pingErr    error

	extends  map[string]int
	finishes map[string]int
	claims   int
	// bodyReads counts Body calls; enqueuedLeases is the lease owner
	// each message was enqueued with ("" for none).
	bodyReads      int
	enqueuedLeases map[string]string
}

type fakeMsg struct {
	env        store.Envelope
	body       []byte // nil once the message is final
	owner      string
	retried    time.Time // an operator's Retry during the lease
	leaseUntil time.Time
	final      bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{msgs: map[string]*fakeMsg{}, records: map[string]*store.Record{},
		extends: map[string]int{}, finishes: map[string]int{}, enqueuedLeases: map[string]string{}}
}

var _ store.Store = (*fakeStore)(nil)

func copyEnvelope(e store.Envelope) store.Envelope {
	e.Rcpts = slices.Clone(e.Rcpts)
	e.MailParams = slices.Clone(e.MailParams)
	return e
}

func (s *fakeStore) Enqueue(_ context.Context, msgs ...*store.NewMessage) error {
	// The body is read before the commit, like an engine's batch.
	bodies := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := io.ReadAll(m.Body)
		if err != nil {
			return fmt.Errorf("fakestore: reading body: %w", err)
		}
		bodies[i] = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrUnavailable
	}
	for _, m := range msgs {
		if s.enqueueErr != nil {
			if err := s.enqueueErr(m); err != nil {
				return err
			}
		}
		if _, dup := s.msgs[m.ID]; dup {
			return fmt.Errorf("fakestore: duplicate ID %s", m.ID)
		}
	}
	for i, m := range msgs {
		env := copyEnvelope(m.Envelope)
		s.msgs[env.ID] = &fakeMsg{env: env, body: bodies[i], owner: m.LeaseOwner, leaseUntil: m.LeaseUntil}
		s.enqueuedLeases[env.ID] = m.LeaseOwner
		rcpts := make([]string, len(env.Rcpts))
		for j, r := range env.Rcpts {
			rcpts[j] = r.Addr
		}
		s.records[env.ID] = &store.Record{ID: env.ID, Mode: "queue", Listener: env.Listener, Client: env.Client,
			Account: env.Account, From: env.From, Rcpts: rcpts, Size: env.Size, HeaderID: env.HeaderID,
			Subject: m.Subject, Received: env.Received, State: env.State, Updated: env.Received}
		s.events = append(s.events, &store.Event{ID: env.ID, At: env.Received, Type: store.EventAccepted})
	}
	return nil
}

func (s *fakeStore) Body(_ context.Context, id string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodyReads++
	if s.bodyErr != nil {
		return nil, s.bodyErr
	}
	m := s.msgs[id]
	if m == nil || m.body == nil {
		return nil, store.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(m.body))), nil
}

func hasPending(e *store.Envelope) bool {
	for _, r := range e.Rcpts {
		if r.State == store.RcptPending {
			return true
		}
	}
	return false
}

func (s *fakeStore) Claim(_ context.Context, owner string, now time.Time, limit int, lease time.Duration, skip []string) ([]*store.Claimed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims++
	if s.closed {
		return nil, store.ErrUnavailable
	}
	if s.claimErr != nil {
		if err := s.claimErr(); err != nil {
			return nil, err
		}
	}
	var due []*fakeMsg
	for _, m := range s.msgs {
		switch {
		case m.final, m.env.State != store.StateQueued, m.env.NextAttempt.After(now),
			m.owner != "" && m.leaseUntil.After(now), !hasPending(&m.env), slices.Contains(skip, m.env.Account):
			continue
		}
		due = append(due, m)
	}
	sort.Slice(due, func(i, j int) bool {
		a, b := due[i].env, due[j].env
		if !a.NextAttempt.Equal(b.NextAttempt) {
			return a.NextAttempt.Before(b.NextAttempt)
		}
		if !a.Received.Equal(b.Received) {
			return a.Received.Before(b.Received)
		}
		return a.ID < b.ID
	})
	if limit > 0 && len(due) > limit {
		due = due[:limit]
	}
	out := make([]*store.Claimed, len(due))
	for i, m := range due {
		if m.owner != owner {
			m.retried = time.Time{}
		}
		m.owner, m.leaseUntil = owner, now.Add(lease)
		out[i] = &store.Claimed{Envelope: copyEnvelope(m.env), Owner: owner, LeaseUntil: m.leaseUntil}
	}
	return out, nil
}

func (s *fakeStore) Extend(_ context.Context, id, owner string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil || m.final || m.owner != owner {
		return store.ErrLeaseLost
	}
	s.extends[id]++
	m.leaseUntil = until
	return nil
}

func (s *fakeStore) Finish(_ context.Context, id, owner string, res store.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrUnavailable
	}
	if s.finishErr != nil {
		if err := s.finishErr(id); err != nil {
			return err
		}
	}
	m := s.msgs[id]
	if m == nil || m.final || m.owner != owner {
		return store.ErrLeaseLost
	}
	s.finishes[id]++
	m.owner, m.leaseUntil = "", time.Time{}
	for i, r := range m.env.Rcpts {
		if n, ok := res.Rcpts[r.Addr]; ok {
			m.env.Rcpts[i].State, m.env.Rcpts[i].LastReply = n.State, n.LastReply
			s.events = append(s.events, &store.Event{ID: id, At: res.At, Type: store.EventAttempt, Rcpt: r.Addr, Reply: n.LastReply})
		}
	}
	if res.Counted {
		m.env.Attempts++
	} else {
		s.events = append(s.events, &store.Event{ID: id, At: res.At, Type: store.EventDeferred, Reply: res.Reply})
	}
	m.env.LastReply = res.Reply
	if hasPending(&m.env) {
		m.env.NextAttempt = res.NextAttempt
		if !m.retried.IsZero() && m.retried.Before(res.NextAttempt) {
			m.env.NextAttempt = m.retried
		}
		m.retried = time.Time{}
		return nil
	}
	m.final, m.body = true, nil
	m.env.State = store.StateDelivered
	typ := store.EventDelivered
	for _, r := range m.env.Rcpts {
		if r.State == store.RcptFailed {
			m.env.State, typ = store.StateBounced, store.EventBounced
		}
	}
	s.events = append(s.events, &store.Event{ID: id, At: res.At, Type: typ, Reply: res.Reply})
	if rec := s.records[id]; rec != nil {
		rec.State, rec.Updated = m.env.State, res.At
	}
	return nil
}

func (s *fakeStore) ReleaseLeases(_ context.Context, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.owner == owner {
			m.owner, m.leaseUntil = "", time.Time{}
		}
	}
	return nil
}

// queued returns a queued message or ErrNotFound.
func (s *fakeStore) queued(id string) (*fakeMsg, error) {
	m := s.msgs[id]
	if m == nil || m.final {
		return nil, store.ErrNotFound
	}
	return m, nil
}

func (s *fakeStore) Get(_ context.Context, id string) (*store.Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.queued(id)
	if err != nil {
		return nil, err
	}
	env := copyEnvelope(m.env)
	return &env, nil
}

func (s *fakeStore) List(_ context.Context, f store.Filter) ([]*store.Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*store.Envelope
	for _, m := range s.msgs {
		if m.final || (f.State != "" && m.env.State != f.State) || (f.Account != "" && m.env.Account != f.Account) || (f.After != "" && m.env.ID <= f.After) {
			continue
		}
		env := copyEnvelope(m.env)
		out = append(out, &env)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (s *fakeStore) setState(id, state, event string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.queued(id)
	if err != nil {
		return err
	}
	m.env.State = state
	s.events = append(s.events, &store.Event{ID: id, Type: event})
	return nil
}

func (s *fakeStore) Hold(_ context.Context, id string) error {
	return s.setState(id, store.StateHeld, store.EventHeld)
}

func (s *fakeStore) Release(_ context.Context, id string) error {
	return s.setState(id, store.StateQueued, store.EventReleased)
}

func (s *fakeStore) Retry(_ context.Context, id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.queued(id)
	if err != nil {
		return err
	}
	m.env.NextAttempt = now
	if m.owner != "" {
		m.retried = now
	}
	s.events = append(s.events, &store.Event{ID: id, At: now, Type: store.EventRetry})
	return nil
}

func (s *fakeStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.queued(id)
	if err != nil {
		return err
	}
	m.final, m.body, m.env.State = true, nil, store.StateDeleted
	s.events = append(s.events, &store.Event{ID: id, Type: store.EventDeleted})
	return nil
}

func (s *fakeStore) Record(_ context.Context, recs []*store.Record, events []*store.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrUnavailable
	}
	for _, r := range recs {
		c := *r
		s.records[r.ID] = &c
	}
	for _, e := range events {
		c := *e
		s.events = append(s.events, &c)
	}
	return nil
}

func (s *fakeStore) History(_ context.Context, id string) (*store.Record, []*store.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.records[id]
	if rec == nil {
		return nil, nil, store.ErrNotFound
	}
	var evs []*store.Event
	for _, e := range s.events {
		if e.ID == id {
			c := *e
			evs = append(evs, &c)
		}
	}
	c := *rec
	return &c, evs, nil
}

// Search filters the records in memory as the engines do in SQL (no
// paging: the queue's tests never page).
func (s *fakeStore) Search(_ context.Context, q store.HistoryQuery) ([]*store.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrUnavailable
	}
	out := []*store.Record{}
	for _, r := range s.records {
		if fakeMatches(r, q) {
			c := *r
			out = append(out, &c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.After(out[j].Received)
		}
		return out[i].ID > out[j].ID
	})
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultSearchLimit
	}
	return out[:min(len(out), limit, store.MaxSearchLimit)], nil
}

// fakeMatches reports whether r matches every field q sets.
func fakeMatches(r *store.Record, q store.HistoryQuery) bool {
	contains := func(v, sub string) bool { return strings.Contains(strings.ToLower(v), strings.ToLower(sub)) }
	rcptOK := q.Rcpt == "" || slices.ContainsFunc(r.Rcpts, func(a string) bool { return contains(a, q.Rcpt) })
	idOK := q.HeaderID == "" || strings.Trim(r.HeaderID, "<>") == strings.Trim(strings.TrimSpace(q.HeaderID), "<>")
	return rcptOK && idOK && contains(r.From, q.From) && contains(r.Subject, q.Subject) &&
		(q.ID == "" || r.ID == q.ID) && (q.State == "" || r.State == q.State) &&
		(q.Account == "" || strings.EqualFold(r.Account, q.Account)) &&
		!r.Received.Before(q.Since) && (q.Until.IsZero() || r.Received.Before(q.Until))
}

func (s *fakeStore) Prune(_ context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, rec := range s.records {
		if m := s.msgs[id]; (m == nil || m.final) && rec.Updated.Before(before) {
			delete(s.records, id)
			n++
		}
	}
	return n, nil
}

func (s *fakeStore) Stats(_ context.Context) (*store.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &store.Stats{Depth: map[store.DepthKey]int{}}
	for _, m := range s.msgs {
		if m.final {
			continue
		}
		st.Depth[store.DepthKey{State: m.env.State, Account: m.env.Account}]++
		if m.env.State == store.StateQueued && (st.Oldest.IsZero() || m.env.Received.Before(st.Oldest)) {
			st.Oldest = m.env.Received
		}
	}
	return st, nil
}

func (s *fakeStore) Ping(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrUnavailable
	}
	return s.pingErr
}

func (s *fakeStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Test accessors.

func (s *fakeStore) msg(id string) (store.Envelope, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return store.Envelope{}, false, false
	}
	return copyEnvelope(m.env), m.body != nil, true
}

func (s *fakeStore) lease(id string) (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs[id]
	if m == nil {
		return "", time.Time{}
	}
	return m.owner, m.leaseUntil
}

func (s *fakeStore) body(id string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.msgs[id]; m != nil {
		return bytes.Clone(m.body)
	}
	return nil
}

// bounces returns the notifications the queue generated, oldest first.
func (s *fakeStore) bounces() []store.Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Envelope
	for _, m := range s.msgs {
		if m.env.Bounce {
			out = append(out, copyEnvelope(m.env))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) || out[i].ID < out[j].ID })
	return out
}

func (s *fakeStore) count(what map[string]int, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return what[id]
}

func (s *fakeStore) eventsOf(id, typ string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		if e.ID == id && e.Type == typ {
			out = append(out, strings.TrimSpace(e.Rcpt+" "+e.Reply))
		}
	}
	return out
}

// counters returns how many claims and body reads the store served.
func (s *fakeStore) counters() (claims, bodyReads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims, s.bodyReads
}

// enqueuedLease is the lease owner id was enqueued with.
func (s *fakeStore) enqueuedLease(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueuedLeases[id]
}
