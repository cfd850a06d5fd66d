package relay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// fakeTransport records what a session asks of the delivery contract and
// fails the steps it is told to.
type fakeTransport struct {
	mu       sync.Mutex
	begin    error            // Begin's error
	rcpt     map[string]error // AddRcpt's error by recipient
	body     error
	queued   bool
	calls    []string // "begin FROM", "rcpt TO", "body N bytes", "reset", "abort"
	rcptOpts map[string]transport.RcptOptions
	bodies   []string
	envs     []transport.Envelope
	aborted  atomic.Int64
}

func (f *fakeTransport) log(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeTransport) Begin(_ context.Context, env transport.Envelope) (transport.Delivery, error) {
	f.log("begin " + env.From)
	f.mu.Lock()
	f.envs = append(f.envs, env)
	f.mu.Unlock()
	if f.begin != nil {
		return nil, f.begin
	}
	return &fakeDelivery{f: f}, nil
}

type fakeDelivery struct {
	f    *fakeTransport
	done bool
}

func (d *fakeDelivery) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	d.f.log("rcpt " + rcpt)
	d.f.mu.Lock()
	if d.f.rcptOpts == nil {
		d.f.rcptOpts = map[string]transport.RcptOptions{}
	}
	d.f.rcptOpts[rcpt] = opts
	d.f.mu.Unlock()
	return d.f.rcpt[rcpt]
}

func (d *fakeDelivery) Body(_ context.Context, msg transport.Message) (transport.Result, error) {
	r, err := msg.Reader()
	if err != nil {
		return transport.Result{}, err
	}
	b, _ := io.ReadAll(r)
	d.f.log(fmt.Sprintf("body %d bytes", msg.Size()))
	d.f.mu.Lock()
	d.f.bodies = append(d.f.bodies, string(b))
	d.f.mu.Unlock()
	d.done = true
	if d.f.body != nil {
		return transport.Result{}, d.f.body
	}
	return transport.Result{Reply: "2.0.0 OK fake", Queued: d.f.queued}, nil
}

func (d *fakeDelivery) Reset(context.Context) error { d.f.log("reset"); return nil }

func (d *fakeDelivery) Abort() {
	if !d.done {
		d.f.log("abort")
	}
	d.done = true
	d.f.aborted.Add(1)
}

// fakeHistory keeps what the session recorded.
type fakeHistory struct {
	mu       sync.Mutex
	recs     []*store.Record
	events   []*store.Event
	subjects atomic.Bool
}

func (h *fakeHistory) Subjects() bool { return h.subjects.Load() }

func (h *fakeHistory) Record(rec *store.Record, events ...*store.Event) {
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	h.events = append(h.events, events...)
	h.mu.Unlock()
}

type contractEnv struct {
	t       *testing.T
	ft      *fakeTransport
	hist    *fakeHistory
	metrics *Metrics
	addr    string
	state   *atomic.Pointer[State]
}

// newContractEnv serves one listener whose only account delivers through
// a fake transport (or, with queue set, whose listener queues through it).
func newContractEnv(t *testing.T, queue bool, dryRun bool) *contractEnv {
	t.Helper()
	hash, err := passwd.Hash("bcrypt", "secret-pw", 4)
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTransport{rcpt: map[string]error{}}
	acct := &Account{Address: "app@example.com", Group: "g", Provider: "p", Transport: ft, MaxRecipients: 3}
	st := &State{Hostname: "relay.test", DryRun: dryRun,
		Clients:  map[string]*Client{"app": {Name: "app", Group: "g", PasswordHash: hash, Allowed: map[string]*Account{"app@example.com": acct}}},
		Accounts: map[string]*Account{"app@example.com": acct}}
	st.SetAuthCache(nil)
	ptr := new(atomic.Pointer[State])
	ptr.Store(st)
	e := &contractEnv{t: t, ft: ft, hist: &fakeHistory{}, metrics: NewMetrics(prometheus.NewRegistry()), state: ptr}
	lis := ListenerSettings{Name: "test", Metrics: e.metrics, History: e.hist}
	if queue {
		lis.Queue, acct.Transport = ft, nil // a queue listener never uses the account's own transport
	}
	be := NewBackend(context.Background(), ptr, lis, hclog.NewNullLogger())
	srv := smtp.NewServer(be)
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	e.addr = ln.Addr().String()
	return e
}

// session dials, authenticates and returns a raw protocol client.
func (e *contractEnv) session() *textproto.Conn {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	c := textproto.NewConn(nc)
	e.t.Cleanup(func() { c.Close() })
	e.expect(c, "", 220)
	e.expect(c, "EHLO client.test", 250)
	e.expect(c, "AUTH PLAIN AGFwcABzZWNyZXQtcHc=", 235) // \0app\0secret-pw
	return c
}

// expect sends cmd (unless empty) and checks the reply's code; it returns
// the reply text.
func (e *contractEnv) expect(c *textproto.Conn, cmd string, code int) string {
	e.t.Helper()
	if cmd != "" {
		if err := c.PrintfLine("%s", cmd); err != nil {
			e.t.Fatal(err)
		}
	}
	got, msg, err := c.ReadResponse(0)
	if got != code {
		e.t.Fatalf("%q: got %d %s (%v), want %d", cmd, got, msg, err, code)
	}
	return msg
}

func (e *contractEnv) data(c *textproto.Conn, body string, code int) string {
	e.t.Helper()
	e.expect(c, "DATA", 354)
	w := c.DotWriter()
	_, _ = io.Copy(w, bufio.NewReader(strings.NewReader(body)))
	w.Close()
	return e.expect(c, "", code)
}

func (e *contractEnv) calls() []string {
	e.ft.mu.Lock()
	defer e.ft.mu.Unlock()
	return append([]string(nil), e.ft.calls...)
}

func TestSessionDrivesTheDeliveryContract(t *testing.T) {
	e := newContractEnv(t, false, false)
	c := e.session()
	e.expect(c, "MAIL FROM:<App@Example.com> BODY=8BITMIME", 250)
	e.expect(c, "RCPT TO:<a@x.test>", 250)
	e.expect(c, `RCPT TO:<"john doe"@x.test>`, 250)
	msg := e.data(c, "Message-ID: <m1@x.test>\r\nSubject: hi\r\n\r\nbody\r\n", 250)
	if !strings.Contains(msg, "accepted by the provider") {
		t.Errorf("250 text %q does not say the provider accepted it", msg)
	}
	want := []string{"begin App@Example.com", "rcpt a@x.test", `rcpt "john doe"@x.test`}
	got := e.calls()
	if len(got) != 4 || got[0] != "begin App@Example.com" || got[1] != want[1] || got[2] != want[2] || !strings.HasPrefix(got[3], "body ") {
		t.Fatalf("calls %q", got)
	}
	env := e.ft.envs[0]
	if env.Account != "app@example.com" || env.Listener != "test" || env.Client != "app" || env.Mail.Body != smtp.Body8BitMIME || env.ID == "" {
		t.Errorf("envelope %+v", env)
	}
	if body := e.ft.bodies[0]; !strings.HasPrefix(body, "Received: from client.test") || !strings.HasSuffix(body, "Subject: hi\r\n\r\nbody\r\n") {
		t.Errorf("body %q: want the Received header in front of the client's bytes", body)
	}
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	if len(e.hist.recs) != 1 || e.hist.recs[0].State != store.StateSent || e.hist.recs[0].HeaderID != "<m1@x.test>" || e.hist.recs[0].ID != env.ID || len(e.hist.recs[0].Rcpts) != 2 {
		t.Fatalf("history %+v", e.hist.recs)
	}
	if e.hist.recs[0].Subject != "" {
		t.Errorf("history kept the subject %q without history_subjects", e.hist.recs[0].Subject)
	}
	if len(e.hist.events) != 2 || e.hist.events[0].Type != store.EventAccepted || e.hist.events[1].Type != store.EventDelivered || e.hist.events[1].Reply != "2.0.0 OK fake" {
		t.Errorf("events %+v", e.hist.events)
	}
	if n := testutil.ToFloat64(e.metrics.messages.WithLabelValues("g", "app@example.com", "p", "delivered")); n != 1 {
		t.Errorf("delivered counter = %v", n)
	}
}

// Each classified failure reaches the client as the transport's reply,
// at the step where it happened, and the session counts the refusals the
// transport made without contacting the provider.
func TestSessionMapsTransportErrors(t *testing.T) {
	reply := func(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
	}
	limited := &transport.Error{Kind: transport.KindLimit, Limit: "rate_per_minute", Reply: reply(451, smtp.EnhancedCode{4, 7, 0}, "limit")}
	circuit := &transport.Error{Kind: transport.KindCircuit, Limit: "provider", Reply: reply(451, smtp.EnhancedCode{4, 4, 1}, "circuit")}
	storage := &transport.Error{Kind: transport.KindStorage, Reply: reply(452, smtp.EnhancedCode{4, 3, 1}, "storage")}
	refused := &transport.Error{Kind: transport.KindProvider, Reply: reply(550, smtp.EnhancedCode{5, 1, 1}, "Provider: no such user")}

	t.Run("begin refused by a limit", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.begin = limited
		c := e.session()
		if msg := e.expect(c, "MAIL FROM:<app@example.com>", 451); !strings.Contains(msg, "limit") {
			t.Errorf("reply %q", msg)
		}
		if n := testutil.ToFloat64(e.metrics.limitRejections.WithLabelValues("app@example.com", "rate_per_minute")); n != 1 {
			t.Errorf("limit rejections = %v", n)
		}
		e.expect(c, "RCPT TO:<a@x.test>", 502) // no transaction was started (go-smtp answers)
	})
	t.Run("begin refused by a circuit", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.begin = circuit
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 451)
		if n := testutil.ToFloat64(e.metrics.circuitRejections.WithLabelValues("provider")); n != 1 {
			t.Errorf("circuit rejections = %v", n)
		}
	})
	t.Run("one recipient refused, the other delivered", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.rcpt["bad@x.test"] = refused
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 250)
		if msg := e.expect(c, "RCPT TO:<bad@x.test>", 550); !strings.Contains(msg, "no such user") {
			t.Errorf("reply %q", msg)
		}
		e.expect(c, "RCPT TO:<good@x.test>", 250)
		e.data(c, "Subject: x\r\n\r\ny\r\n", 250)
	})
	t.Run("body refused: 5xx and history says refused", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.body = &transport.Error{Kind: transport.KindProvider, Reply: reply(554, smtp.EnhancedCode{5, 6, 0}, "Provider: content refused")}
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 250)
		e.expect(c, "RCPT TO:<a@x.test>", 250)
		e.data(c, "Subject: x\r\n\r\ny\r\n", 554)
		e.hist.mu.Lock()
		defer e.hist.mu.Unlock()
		if len(e.hist.recs) != 1 || e.hist.recs[0].State != store.StateRefused || e.hist.events[1].Reply != "554 5.6.0 Provider: content refused" {
			t.Errorf("history %+v %+v", e.hist.recs, e.hist.events)
		}
	})
	t.Run("body ambiguous: 451", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.body = &transport.Error{Kind: transport.KindAmbiguous, Reply: reply(451, smtp.EnhancedCode{4, 4, 2}, "lost after the dot")}
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 250)
		e.expect(c, "RCPT TO:<a@x.test>", 250)
		e.data(c, "Subject: x\r\n\r\ny\r\n", 451)
	})
	t.Run("queue cannot store: 452 4.3.1", func(t *testing.T) {
		e := newContractEnv(t, true, false)
		e.ft.body = storage
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 250)
		e.expect(c, "RCPT TO:<a@x.test>", 250)
		if msg := e.data(c, "Subject: x\r\n\r\ny\r\n", 452); !strings.HasPrefix(msg, "4.3.1") {
			t.Errorf("reply %q", msg)
		}
		if n := testutil.ToFloat64(e.metrics.refused.WithLabelValues("test", "storage_full")); n != 1 {
			t.Errorf("storage refusals = %v", n)
		}
	})
	t.Run("an unclassified error is a temporary local error", func(t *testing.T) {
		e := newContractEnv(t, false, false)
		e.ft.begin = io.ErrUnexpectedEOF
		c := e.session()
		e.expect(c, "MAIL FROM:<app@example.com>", 451)
	})
}

func TestQueueListenerNamesTheQueueID(t *testing.T) {
	e := newContractEnv(t, true, false)
	e.ft.queued = true
	c := e.session()
	e.expect(c, "MAIL FROM:<app@example.com>", 250)
	e.expect(c, "RCPT TO:<a@x.test>", 250)
	msg := e.data(c, "Subject: x\r\n\r\ny\r\n", 250)
	id := e.ft.envs[0].ID
	if msg != "2.0.0 OK: queued as "+id {
		t.Errorf("250 text %q, want the queue ID %s", msg, id)
	}
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	if len(e.hist.recs) != 0 {
		t.Errorf("the session recorded a queued message's history itself (the queue does): %+v", e.hist.recs)
	}
}

func TestSessionAbortsAndLimitsRecipients(t *testing.T) {
	e := newContractEnv(t, true, false)
	c := e.session()
	e.expect(c, "MAIL FROM:<app@example.com>", 250)
	for i := 0; i < 3; i++ {
		e.expect(c, fmt.Sprintf("RCPT TO:<r%d@x.test>", i), 250)
	}
	// The account's recipients-per-message limit holds in queue mode too,
	// where no provider is asked before the message is stored.
	if msg := e.expect(c, "RCPT TO:<r4@x.test>", 452); !strings.HasPrefix(msg, "4.5.3") {
		t.Errorf("4th recipient: %q", msg)
	}
	e.expect(c, "RSET", 250)
	got := e.calls()
	if got[len(got)-1] != "abort" {
		t.Errorf("RSET did not abort the delivery: %q", got)
	}
	e.expect(c, "MAIL FROM:<app@example.com>", 250)
	e.expect(c, "QUIT", 221)
	deadline := time.Now().Add(5 * time.Second)
	for e.ft.aborted.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.ft.aborted.Load(); n != 2 {
		t.Errorf("%d aborts after RSET and QUIT mid-transaction, want 2", n)
	}
}

func TestDryRunResetsInsteadOfSending(t *testing.T) {
	e := newContractEnv(t, false, true)
	c := e.session()
	e.expect(c, "MAIL FROM:<app@example.com>", 250)
	e.expect(c, "RCPT TO:<a@x.test>", 250)
	if msg := e.data(c, "Subject: x\r\n\r\ny\r\n", 250); !strings.Contains(msg, "dry run") {
		t.Errorf("reply %q", msg)
	}
	got := e.calls()
	if got[len(got)-2] != "reset" || strings.HasPrefix(got[len(got)-1], "body") {
		t.Errorf("calls %q: want reset and no body", got)
	}
}

// A transport error without a reply still gets a proper temporary reply.
func TestErrorWithoutReplyIsATemporaryLocalError(t *testing.T) {
	e := newContractEnv(t, false, false)
	e.ft.begin = &transport.Error{Kind: transport.KindLost}
	c := e.session()
	if msg := e.expect(c, "MAIL FROM:<app@example.com>", 451); !strings.HasPrefix(msg, "4.3.0") {
		t.Errorf("reply %q", msg)
	}
}

// With history_subjects on, the record carries the decoded Subject, read
// in the same pass over the header as the Message-ID; the setting is
// asked per message.
func TestSessionRecordsTheSubjectWhenAsked(t *testing.T) {
	e := newContractEnv(t, false, false)
	c := e.session()
	send := func(subject string) {
		e.expect(c, "MAIL FROM:<app@example.com>", 250)
		e.expect(c, "RCPT TO:<a@x.test>", 250)
		e.data(c, "Message-ID: <m@x.test>\r\nSubject: "+subject+"\r\n\r\nbody\r\n", 250)
	}
	e.hist.subjects.Store(true)
	send("=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from\r\n the scanner")
	e.hist.subjects.Store(false)
	send("second")
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	if len(e.hist.recs) != 2 {
		t.Fatalf("history %+v", e.hist.recs)
	}
	if r := e.hist.recs[0]; r.Subject != "Grüße from the scanner" || r.HeaderID != "<m@x.test>" {
		t.Errorf("record with subjects on: subject %q, Message-ID %q", r.Subject, r.HeaderID)
	}
	if r := e.hist.recs[1]; r.Subject != "" || r.HeaderID != "<m@x.test>" {
		t.Errorf("record with subjects off: subject %q, Message-ID %q", r.Subject, r.HeaderID)
	}
}
