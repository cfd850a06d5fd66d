package queue

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// sent is one message a fake transport's Body accepted.
type sent struct {
	env      transport.Envelope
	rcpts    []string
	rcptOpts map[string]transport.RcptOptions
	data     string
}

// fakeTransport plays the provider: hooks decide each step, and it
// counts how many Body calls run at once.
type fakeTransport struct {
	mu sync.Mutex
	// begin, rcpt and body script the provider; nil accepts.
	begin func(env transport.Envelope) error
	rcpt  func(env transport.Envelope, rcpt string) error
	body  func(ctx context.Context, env transport.Envelope, rcpts []string) (transport.Result, error)

	begins    int
	inBody    int
	maxInBody int
	sent      []sent
}

func (f *fakeTransport) Begin(_ context.Context, env transport.Envelope) (transport.Delivery, error) {
	f.mu.Lock()
	f.begins++
	hook := f.begin
	f.mu.Unlock()
	if hook != nil {
		if err := hook(env); err != nil {
			return nil, err
		}
	}
	return &fakeDelivery{f: f, env: env}, nil
}

func (f *fakeTransport) snapshot() (begins, maxInBody int, out []sent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begins, f.maxInBody, append([]sent(nil), f.sent...)
}

func (f *fakeTransport) inFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inBody
}

type fakeDelivery struct {
	f        *fakeTransport
	env      transport.Envelope
	rcpts    []string
	rcptOpts map[string]transport.RcptOptions
}

func (d *fakeDelivery) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	d.f.mu.Lock()
	hook := d.f.rcpt
	d.f.mu.Unlock()
	if hook != nil {
		if err := hook(d.env, rcpt); err != nil {
			return err
		}
	}
	d.rcpts = append(d.rcpts, rcpt)
	if d.rcptOpts == nil {
		d.rcptOpts = map[string]transport.RcptOptions{}
	}
	d.rcptOpts[rcpt] = opts
	return nil
}

func (d *fakeDelivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	data, err := readMessage(msg)
	if err != nil {
		return transport.Result{}, &transport.Error{Kind: transport.KindLocal, Err: err}
	}
	f := d.f
	f.mu.Lock()
	f.inBody++
	f.maxInBody = max(f.maxInBody, f.inBody)
	hook := f.body
	f.mu.Unlock()
	res := transport.Result{Reply: "250 2.0.0 OK fake"}
	if hook != nil {
		res, err = hook(ctx, d.env, d.rcpts)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inBody--
	if err == nil {
		f.sent = append(f.sent, sent{env: d.env, rcpts: append([]string(nil), d.rcpts...), rcptOpts: d.rcptOpts, data: data})
	}
	return res, err
}

// readMessage reads a message twice, as a transport that retries would,
// and checks that both reads and Size agree.
func readMessage(msg transport.Message) (string, error) {
	var texts [2]string
	for i := range texts {
		r, err := msg.Reader()
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return "", err
		}
		texts[i] = string(b)
	}
	if texts[0] != texts[1] || int64(len(texts[0])) != msg.Size() {
		return "", fmt.Errorf("fake transport: message reads differ or disagree with Size %d", msg.Size())
	}
	return texts[0], nil
}

func (d *fakeDelivery) Reset(context.Context) error { return nil }
func (d *fakeDelivery) Abort()                      {}

// resolver routes accounts to transports and checks that every Route it
// handed out is released.
type resolver struct {
	mu       sync.Mutex
	routes   map[string]Route
	acquired int
}

func (r *resolver) set(account string, tr transport.Transport, concurrency int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.routes == nil {
		r.routes = map[string]Route{}
	}
	r.routes[account] = Route{Transport: tr, Concurrency: concurrency}
}

func (r *resolver) remove(account string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.routes, account)
}

func (r *resolver) resolve(account string) (Route, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	route, ok := r.routes[account]
	if !ok {
		return Route{}, false
	}
	r.acquired++
	var once sync.Once
	route.Release = func() {
		once.Do(func() {
			r.mu.Lock()
			r.acquired--
			r.mu.Unlock()
		})
	}
	return route, true
}

func (r *resolver) outstanding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acquired
}

// notifier builds simple notifications and remembers what it was given.
type notifier struct {
	mu    sync.Mutex
	calls []notifyCall
	n     int
}

type notifyCall struct {
	orig    string
	header  string
	failed  []Failure
	noticed time.Time
}

func (n *notifier) notify(orig *store.Envelope, header []byte, failed []Failure, now time.Time) ([]byte, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, notifyCall{orig: orig.ID, header: string(header), failed: failed, noticed: now})
	n.n++
	var b strings.Builder
	fmt.Fprintf(&b, "From: Mail Delivery System <%s>\r\nTo: %s\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-%d@relay.test>\r\n\r\n", orig.Account, orig.From, n.n)
	for _, f := range failed {
		fmt.Fprintf(&b, "%s: %s %s %s\r\n", f.Rcpt, f.Status, f.Reply, f.Reason)
	}
	return []byte(b.String()), true, nil
}

func (n *notifier) snapshot() []notifyCall {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]notifyCall(nil), n.calls...)
}

// harness is a queue over a fake store, with a fake provider for the
// account "acct@example.com".
type harness struct {
	t      *testing.T
	st     *fakeStore
	tr     *fakeTransport
	routes *resolver
	notes  *notifier
	clock  *testutil.Clock
	reg    *prometheus.Registry
	logs   *testutil.LogBuffer
	q      *Queue
	ctx    context.Context
}

const acct = "acct@example.com"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		RetrySchedule:     []time.Duration{time.Minute, 5 * time.Minute},
		MaxLifetime:       24 * time.Hour,
		Workers:           4,
		MaxBouncesPerHour: 10,
		Owner:             "instance-a",
		Poll:              time.Hour, // tests kick; polling would hide a missing Kick
	}
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, st: newFakeStore(), tr: &fakeTransport{}, routes: &resolver{}, notes: &notifier{},
		clock: testutil.NewClock(t0), reg: prometheus.NewRegistry(), logs: &testutil.LogBuffer{}, ctx: context.Background()}
	h.routes.set(acct, h.tr, 0)
	h.q = h.newQueue(cfg, h.reg)
	return h
}

// newQueue builds a queue over the harness's store (a restart builds a
// second one); reg nil: a registry of its own.
func (h *harness) newQueue(cfg Config, reg *prometheus.Registry) *Queue {
	h.t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	q, err := New(h.st, h.routes.resolve, h.notes.notify, cfg, h.logs.Logger(h.t), reg)
	if err != nil {
		h.t.Fatal(err)
	}
	q.now = h.clock.Now
	return q
}

// start runs the queue's scheduler until the test ends.
func (h *harness) start(q *Queue) {
	h.t.Helper()
	q.Start(h.ctx)
	h.t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if h.t.Failed() {
			cancel() // deliveries a failed test left blocked are abandoned
		}
		if err := q.Stop(ctx); err != nil && !h.t.Failed() {
			h.t.Errorf("Stop: %v", err)
		}
	})
}

// manual prepares the queue to be driven by step instead of its
// scheduler goroutine, so that a test can tell that nothing was claimed.
func (h *harness) manual() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.q.mu.Lock()
	h.q.started = true
	h.q.workCtx, h.q.workCancel = ctx, cancel
	// The test drives every claim: no message goes to a worker as it
	// arrives (the handover has tests of its own).
	h.q.handover = false
	h.q.mu.Unlock()
	h.t.Cleanup(func() {
		h.q.workers.Wait()
		cancel()
		h.q.returnBacklog(context.Background(), true)
	})
}

// step runs one round of the scheduler and waits for the deliveries it
// started.
// claimOnly makes every message wait in the store for a claim, as
// messages do that arrive while the workers are busy: no new message is
// handed to a worker at once.
func (h *harness) claimOnly() {
	h.q.mu.Lock()
	h.q.handover = false
	h.q.mu.Unlock()
}

func (h *harness) step() {
	h.q.claimable.Store(true) // as the poll timer does
	h.q.dispatch(context.Background())
	h.q.workers.Wait()
}

// submit queues a message through the queue's transport, as a
// `delivery = "queue"` session would, and returns its ID.
func (h *harness) submit(from string, rcpts ...string) string {
	h.t.Helper()
	return h.submitMessage(from, "Subject: test\r\nMessage-ID: <m@client.test>\r\n\r\nhello\r\n", rcpts...)
}

func (h *harness) submitMessage(from, data string, rcpts ...string) string {
	h.t.Helper()
	id := transport.NewID()
	d, err := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: id, Account: acct, From: from, Listener: "printers", Client: "scanner"})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := d.AddRcpt(context.Background(), r, transport.RcptOptions{}); err != nil {
			h.t.Fatal(err)
		}
	}
	if _, err := d.Body(context.Background(), stringMessage(data)); err != nil {
		h.t.Fatalf("queueing a message: %v", err)
	}
	return id
}

// env returns a stored message's envelope.
func (h *harness) env(id string) store.Envelope {
	h.t.Helper()
	env, _, ok := h.st.msg(id)
	if !ok {
		h.t.Fatalf("message %s is not in the store", id)
	}
	return env
}

func rcptOf(env store.Envelope, addr string) store.Recipient {
	for _, r := range env.Rcpts {
		if r.Addr == addr {
			return r
		}
	}
	return store.Recipient{}
}

// metric returns the value of a counter or gauge with exactly these
// labels (0 when absent).
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return metricValue(h.t, h.reg, name, labels...)
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

// stringMessage is a transport.Message in memory.
type stringMessage string

func (s stringMessage) Reader() (io.Reader, error) { return strings.NewReader(string(s)), nil }
func (s stringMessage) Size() int64                { return int64(len(s)) }

// reply is a provider's answer as the SMTP transport classifies it.
func reply(code int, ec smtp.EnhancedCode, text string) error {
	return &transport.Error{Kind: transport.KindProvider, Reply: &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}}
}

// eventually waits for cond, failing the test after a generous bound
// (a hang, not a slow machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, cond)
}
