package admin

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// fakeStore is an in-memory store with the semantics the console relies
// on (store.Store's documentation); it records every call that changes
// something.
type fakeStore struct {
	mu      sync.Mutex
	queued  map[string]*store.Envelope
	records map[string]*store.Record
	events  map[string][]*store.Event
	calls   []string
	queries []store.HistoryQuery
	// fail, when set, is returned by every call.
	fail error
	// gate, when set, holds every Search until it is closed or the
	// search's context ends; each held search is announced on held.
	gate chan struct{}
	held chan context.Context
}

func newFakeStore() *fakeStore {
	return &fakeStore{queued: map[string]*store.Envelope{}, records: map[string]*store.Record{}, events: map[string][]*store.Event{}}
}

// enqueue adds a queued message with its history record and events.
func (f *fakeStore) enqueue(e store.Envelope, events ...*store.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued[e.ID] = &e
	var rcpts []string
	for _, r := range e.Rcpts {
		rcpts = append(rcpts, r.Addr)
	}
	f.records[e.ID] = &store.Record{ID: e.ID, Mode: "queue", Listener: e.Listener, Client: e.Client, Account: e.Account,
		From: e.From, Rcpts: rcpts, Size: e.Size, HeaderID: e.HeaderID, Received: e.Received, State: e.State, Updated: e.Received}
	f.events[e.ID] = events
}

// record adds a message known to the history only.
func (f *fakeStore) record(r store.Record, events ...*store.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records[r.ID] = &r
	f.events[r.ID] = events
}

func (f *fakeStore) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeStore) lastQuery() store.HistoryQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queries) == 0 {
		return store.HistoryQuery{}
	}
	return f.queries[len(f.queries)-1]
}

func (f *fakeStore) Get(_ context.Context, id string) (*store.Envelope, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	e, ok := f.queued[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	c := *e
	c.Rcpts = slices.Clone(e.Rcpts)
	return &c, nil
}

func (f *fakeStore) List(_ context.Context, flt store.Filter) ([]*store.Envelope, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []*store.Envelope
	for _, e := range f.queued {
		if (flt.State == "" || e.State == flt.State) && (flt.Account == "" || e.Account == flt.Account) && e.ID > flt.After {
			c := *e
			out = append(out, &c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if flt.Limit > 0 && len(out) > flt.Limit {
		out = out[:flt.Limit]
	}
	return out, nil
}

// change applies fn to a queued message and records the call and event.
func (f *fakeStore) change(id, call, event string, fn func(e *store.Envelope)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	e, ok := f.queued[id]
	if !ok {
		return store.ErrNotFound
	}
	f.calls = append(f.calls, call+" "+id)
	fn(e)
	f.events[id] = append(f.events[id], &store.Event{ID: id, At: time.Now(), Type: event})
	if r := f.records[id]; r != nil {
		r.State = e.State
	}
	return nil
}

func (f *fakeStore) Hold(_ context.Context, id string) error {
	return f.change(id, "hold", store.EventHeld, func(e *store.Envelope) { e.State = store.StateHeld })
}

func (f *fakeStore) Release(_ context.Context, id string) error {
	return f.change(id, "release", store.EventReleased, func(e *store.Envelope) { e.State = store.StateQueued })
}

func (f *fakeStore) Retry(_ context.Context, id string, now time.Time) error {
	return f.change(id, "retry", store.EventRetry, func(e *store.Envelope) { e.NextAttempt = now })
}

func (f *fakeStore) Delete(_ context.Context, id string) error {
	err := f.change(id, "delete", store.EventDeleted, func(e *store.Envelope) { e.State = store.StateDeleted })
	if err == nil {
		f.mu.Lock()
		delete(f.queued, id)
		f.mu.Unlock()
	}
	return err
}

func (f *fakeStore) History(_ context.Context, id string) (*store.Record, []*store.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, nil, f.fail
	}
	r, ok := f.records[id]
	if !ok {
		return nil, nil, store.ErrNotFound
	}
	c := *r
	return &c, slices.Clone(f.events[id]), nil
}

// holdSearches makes every Search wait until release is called or its
// context ends, as a slow search of a large history does; held
// announces each waiting search's context.
func (f *fakeStore) holdSearches() (held <-chan context.Context, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate, f.held = make(chan struct{}), make(chan context.Context, 16)
	gate := f.gate
	var once sync.Once
	return f.held, func() { once.Do(func() { close(gate) }) }
}

// wait holds a search while the gate is closed; the error is its
// context's when that ends first, as the real stores answer.
func (f *fakeStore) wait(ctx context.Context) error {
	f.mu.Lock()
	gate, held := f.gate, f.held
	f.mu.Unlock()
	if gate == nil {
		return nil
	}
	held <- ctx
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("search interrupted: %w", ctx.Err())
	}
}

// Search implements store.HistoryQuery's documented semantics.
func (f *fakeStore) Search(ctx context.Context, q store.HistoryQuery) ([]*store.Record, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if f.fail != nil {
		return nil, f.fail
	}
	var out []*store.Record
	for _, r := range f.records {
		if matchesQuery(r, q) {
			c := *r
			out = append(out, &c)
		}
	}
	newer := func(a, b *store.Record) bool {
		if !a.Received.Equal(b.Received) {
			return a.Received.After(b.Received)
		}
		return a.ID > b.ID
	}
	sort.Slice(out, func(i, j int) bool { return newer(out[i], out[j]) })
	if q.Before != "" {
		b := f.records[q.Before]
		if b == nil {
			return nil, fmt.Errorf("before %s: %w", q.Before, store.ErrNotFound)
		}
		out = slices.DeleteFunc(out, func(r *store.Record) bool { return !newer(b, r) })
	}
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func matchesQuery(r *store.Record, q store.HistoryQuery) bool {
	has := func(s, part string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(part)) }
	anyRcpt := q.Rcpt == ""
	for _, rc := range r.Rcpts {
		anyRcpt = anyRcpt || has(rc, q.Rcpt)
	}
	trim := func(s string) string { return strings.Trim(s, "<>") }
	return (q.From == "" || has(r.From, q.From)) && anyRcpt &&
		(q.HeaderID == "" || trim(r.HeaderID) == trim(q.HeaderID)) &&
		(q.ID == "" || r.ID == q.ID) && (q.Subject == "" || has(r.Subject, q.Subject)) &&
		(q.State == "" || r.State == q.State) && (q.Account == "" || strings.EqualFold(r.Account, q.Account)) &&
		(q.Since.IsZero() || !r.Received.Before(q.Since)) && (q.Until.IsZero() || r.Received.Before(q.Until))
}

func (f *fakeStore) Stats(context.Context) (*store.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	st := &store.Stats{Depth: map[store.DepthKey]int{}}
	for _, e := range f.queued {
		st.Depth[store.DepthKey{State: e.State, Account: e.Account}]++
		if e.State == store.StateQueued && (st.Oldest.IsZero() || e.Received.Before(st.Oldest)) {
			st.Oldest = e.Received
		}
	}
	return st, nil
}

// fakeBackend is the runtime as the console sees it.
type fakeBackend struct {
	mu        sync.Mutex
	st        *fakeStore // nil: no store block
	info      Info
	accounts  []Account
	reload    ReloadStatus
	vault     VaultStatus
	reloadErr error
	reloads   int
	// calls counts the calls of each method.
	calls map[string]int
	// onReload, when set, runs inside TriggerReload with its context.
	onReload func(ctx context.Context)
}

func (b *fakeBackend) called(method string) {
	if b.calls == nil {
		b.calls = map[string]int{}
	}
	b.calls[method]++
}

// callCount is how many Backend calls were made so far.
func (b *fakeBackend) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		n += c
	}
	return n
}

func (b *fakeBackend) Store() Store {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("Store")
	if b.st == nil {
		return nil
	}
	return b.st
}

func (b *fakeBackend) Info() Info {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("Info")
	return b.info
}

func (b *fakeBackend) Accounts(context.Context) []Account {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("Accounts")
	return slices.Clone(b.accounts)
}

func (b *fakeBackend) Reload() ReloadStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("Reload")
	return b.reload
}

func (b *fakeBackend) TriggerReload(ctx context.Context) error {
	b.mu.Lock()
	hook := b.onReload
	b.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("TriggerReload")
	b.reloads++
	b.reload.LastAttempt = time.Now()
	b.reload.LastOK = b.reloadErr == nil
	if b.reloadErr != nil {
		b.reload.LastError = b.reloadErr.Error()
		return b.reloadErr
	}
	b.reload.LastError = ""
	b.reload.Reloads++
	return nil
}

func (b *fakeBackend) Vault() VaultStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.called("Vault")
	return b.vault
}

func (b *fakeBackend) reloadCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reloads
}

// The fixture's messages: two queued (one held), one delivered directly,
// one deleted from the queue.
const (
	idQueued    = "01JQUEUED0000000000000000A"
	idHeld      = "01JHELD000000000000000000B"
	idDelivered = "01JDELIVERED00000000000000"
	idDeleted   = "01JDELETED000000000000000D"
)

// newFixture is a relay with two accounts, a store holding the messages
// above, history subjects as given, and a Vault.
func newFixture(now time.Time, subjects bool) *fakeBackend {
	st := newFakeStore()
	subject := func(s string) string {
		if subjects {
			return s
		}
		return ""
	}
	rcpt := func(addr, reply string) store.Recipient {
		return store.Recipient{Addr: addr, State: store.RcptPending, LastReply: reply}
	}
	st.enqueue(store.Envelope{ID: idQueued, Account: "alice@example.com", Listener: "printers", Client: "scanner",
		From: "scanner@example.com", Rcpts: []store.Recipient{rcpt("x@example.net", "451 4.3.0 Mailbox busy"), rcpt("y@example.net", "")},
		Size: 2048, HeaderID: "<q1@scanner.example>", Received: now.Add(-2 * time.Hour), Expires: now.Add(118 * time.Hour),
		NextAttempt: now.Add(time.Hour), Attempts: 3, LastReply: "451 4.3.0 Mailbox busy", State: store.StateQueued},
		&store.Event{ID: idQueued, At: now.Add(-2 * time.Hour), Type: store.EventAccepted},
		&store.Event{ID: idQueued, At: now.Add(-time.Hour), Type: store.EventAttempt, Rcpt: "x@example.net", Reply: "451 4.3.0 Mailbox busy"})
	st.enqueue(store.Envelope{ID: idHeld, Account: "bob@example.com", From: "app@example.com", Rcpts: []store.Recipient{rcpt("z@example.net", "")},
		Size: 512, Received: now.Add(-30 * time.Minute), Expires: now.Add(100 * time.Hour), NextAttempt: now, State: store.StateHeld},
		&store.Event{ID: idHeld, At: now.Add(-30 * time.Minute), Type: store.EventAccepted},
		&store.Event{ID: idHeld, At: now.Add(-20 * time.Minute), Type: store.EventHeld})
	st.records[idQueued].Subject = subject("Scan of invoice 42")
	st.record(store.Record{ID: idDelivered, Mode: "direct", Listener: "apps", Client: "crm", Account: "alice@example.com",
		From: "crm@example.com", Rcpts: []string{"customer@example.org"}, Size: 4096, HeaderID: "<crm-7@crm.example>",
		Subject: subject("Your order"), Received: now.Add(-26 * time.Hour), State: store.StateSent, Updated: now.Add(-26 * time.Hour)},
		&store.Event{ID: idDelivered, At: now.Add(-26 * time.Hour), Type: store.EventAccepted},
		&store.Event{ID: idDelivered, At: now.Add(-26 * time.Hour), Type: store.EventDelivered, Rcpt: "customer@example.org", Reply: "250 2.0.0 OK"})
	st.record(store.Record{ID: idDeleted, Mode: "queue", Account: "bob@example.com", From: "old@example.com",
		Rcpts: []string{"gone@example.net"}, Received: now.Add(-72 * time.Hour), State: store.StateDeleted, Updated: now.Add(-48 * time.Hour)},
		&store.Event{ID: idDeleted, At: now.Add(-72 * time.Hour), Type: store.EventAccepted},
		&store.Event{ID: idDeleted, At: now.Add(-48 * time.Hour), Type: store.EventDeleted})
	return &fakeBackend{
		st: st,
		info: Info{Version: "1.4.0-test", Hostname: "relay.example", Started: now.Add(-50 * time.Hour),
			Listeners: []Listener{{Name: "printers", Address: "0.0.0.0:2525", Delivery: "queue", TLSMode: "starttls", Sessions: 2},
				{Name: "apps", Address: "127.0.0.1:587", Delivery: "direct", TLSMode: "implicit"}},
			HistorySubjects: subjects, HistoryRetention: 30 * 24 * time.Hour, Store: "sqlite", QueueMaxLifetime: 120 * time.Hour},
		accounts: []Account{
			{Address: "alice@example.com", Group: "staff", Provider: "m365", Transport: "graph", TokenState: "valid",
				TokenExpiry: now.Add(40 * time.Minute), LastRefresh: now.Add(-20 * time.Minute), Circuit: "closed",
				QuotaUsed: map[string]float64{"messages_per_day": 0.42, "recipients_per_day": 0.93}, Pool: Pool{Open: 1, Max: 4}, Queued: 1},
			{Address: "bob@example.com", Group: "apps", Provider: "google", Transport: "smtp", TokenState: "failing",
				LastError: "invalid_grant: Token has been expired or revoked.", Circuit: "open", Pool: Pool{Max: 3}, Held: 1},
		},
		reload: ReloadStatus{ConfigPath: "/etc/oauthrelay/relay.hcl", Loaded: now.Add(-3 * time.Hour), LastAttempt: now.Add(-time.Hour),
			LastError:   "relay.hcl:12,3-9: Unsupported argument: An argument named \"adress\" is not expected here.",
			Diagnostics: []string{"relay.hcl:12:3: Unsupported argument: An argument named \"adress\" is not expected here."}, Reloads: 2},
		vault: VaultStatus{Configured: true, Address: "https://vault.example:8200", AuthMethod: "approle", Authenticated: true,
			TokenExpiry: now.Add(20 * time.Hour), Secrets: []VaultSecret{
				{Ref: "vault://secret/oauthrelay/m365#client_secret", Version: 3, LastRead: now.Add(-5 * time.Minute)},
				{Ref: "vault://secret/oauthrelay/admin#admin", Version: 1, LastRead: now.Add(-5 * time.Minute)}}},
	}
}

var errUnavailable = fmt.Errorf("database unreachable: %w", store.ErrUnavailable)
