package upstream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// respondFunc scripts a fakeProvider.
type respondFunc = func(conn int, line string) (reply string, hangUp bool)

// deliveryLog notes what a scripted provider accepted: the recipients of
// each message it took.
type deliveryLog struct {
	mu        sync.Mutex
	rcpts     map[int][]string // per connection, the current transaction's
	delivered []string         // each message's recipients, comma-separated
}

func (l *deliveryLog) wrap(respond respondFunc) respondFunc {
	l.rcpts = map[int][]string{}
	return func(conn int, line string) (string, bool) {
		reply, hangUp := respond(conn, line)
		l.mu.Lock()
		defer l.mu.Unlock()
		ok := !hangUp && strings.HasPrefix(reply, "250")
		switch {
		case strings.HasPrefix(line, "MAIL"), strings.HasPrefix(line, "RSET"):
			l.rcpts[conn] = nil
		case strings.HasPrefix(line, "RCPT TO:<") && ok:
			addr, _, _ := strings.Cut(strings.TrimPrefix(line, "RCPT TO:<"), ">")
			l.rcpts[conn] = append(l.rcpts[conn], addr)
		case line == "." && ok && len(l.rcpts[conn]) > 0:
			l.delivered = append(l.delivered, strings.Join(l.rcpts[conn], ","))
			l.rcpts[conn] = nil
		}
		return reply, hangUp
	}
}

func (l *deliveryLog) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.delivered...)
}

// countingLimiter is an account without limits that counts what its
// reservations do with the recipients' shares.
type countingLimiter struct {
	mu               sync.Mutex
	held             int // recipients' shares kept by committed messages
	negative         bool
	commits, cancels int
}

func (l *countingLimiter) Reserve(time.Time) (limits.Reservation, error) {
	return &countingReservation{l: l}, nil
}
func (l *countingLimiter) Usage(time.Time) map[string]float64 { return nil }

type countingReservation struct {
	l     *countingLimiter
	rcpts int
}

func (r *countingReservation) AddRcpt(time.Time) error { r.rcpts++; return nil }
func (r *countingReservation) DropRcpt() {
	r.rcpts--
	if r.rcpts < 0 {
		r.l.mu.Lock()
		r.l.negative = true
		r.l.mu.Unlock()
	}
}
func (r *countingReservation) Commit() {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.held += r.rcpts
	r.l.commits++
}
func (r *countingReservation) Cancel(time.Time) {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.cancels++
}

// busyPool is busy for some of the requests.
type busyPool struct {
	*countingPool
	busy []int // the busy requests, counted from 1

	mu   sync.Mutex
	gets int
}

func (p *busyPool) Get(ctx context.Context) (*Conn, bool, error) {
	p.mu.Lock()
	p.gets++
	busy := slices.Contains(p.busy, p.gets)
	p.mu.Unlock()
	if busy {
		return nil, false, &Error{Stage: StagePool, Err: errPoolExhaustedForTest}
	}
	return p.countingPool.Get(ctx)
}

func (p *busyPool) TryGet(ctx context.Context) (*Conn, bool, error) { return p.Get(ctx) }

var errPoolExhaustedForTest = fmt.Errorf("every connection of the account is in use")

// envelopeOutcome is everything one delivery did, for comparing the
// pipelined envelope (BeginWith) with Begin and AddRcpt one at a time.
type envelopeOutcome struct {
	Begin     string   // Begin's refusal ("": started)
	Verdicts  []string // each recipient's ("": accepted)
	Body      string   // Body's refusal ("": delivered, or not sent)
	Delivered []string // the recipients of each message the provider took
	Conns     int64    // connections opened
	Discarded int64    // connections dropped instead of pooled
	Circuits  string   // the account's and the provider's circuit states
	Held      int      // recipients' shares kept (the message was sent)
	Commits   int
	Cancels   int
	Negative  bool // a share was given back twice
}

// verdict names a refusal by its reply code and kind.
func verdict(err error) string {
	if err == nil {
		return ""
	}
	te := transport.As(err)
	kinds := map[transport.Kind]string{transport.KindProvider: "provider", transport.KindLost: "lost",
		transport.KindLocal: "local", transport.KindBusy: "busy", transport.KindConnect: "connect"}
	return fmt.Sprintf("%d %s", te.Reply.Code, kinds[te.Kind])
}

// envelopeScenario is a scripted provider and an envelope for it.
type envelopeScenario struct {
	name       string
	extensions []string           // nil: PIPELINING and 8BITMIME
	provider   func() respondFunc // a fresh script for each run
	rcpts      []string
	// busyGets are the connection requests (counted from 1) that find
	// every connection of the account in use elsewhere.
	busyGets []int
	want     envelopeOutcome
}

// beginFunc starts a delivery and offers it the recipients, stopping as
// the queue does after a refusal that says the provider was not
// contacted.
type beginFunc func(ctx context.Context, tr *Transport, rcpts []string) (transport.Delivery, []error, error)

func beginStepwise(ctx context.Context, tr *Transport, rcpts []string) (transport.Delivery, []error, error) {
	d, err := tr.Begin(ctx, testEnvelope)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, r := range rcpts {
		err := d.AddRcpt(ctx, r, transport.RcptOptions{})
		errs = append(errs, err)
		if te := transport.As(err); err != nil && !te.Attempted() && te.Kind != transport.KindLocal {
			break
		}
	}
	return d, errs, nil
}

func beginPipelined(ctx context.Context, tr *Transport, rcpts []string) (transport.Delivery, []error, error) {
	return tr.BeginWith(ctx, testEnvelope, rcpts, nil)
}

// run delivers the scenario's message with begin and says what happened.
func (sc envelopeScenario) run(t *testing.T, begin beginFunc) envelopeOutcome {
	t.Helper()
	log := &deliveryLog{}
	exts := sc.extensions
	if exts == nil {
		exts = []string{"PIPELINING", "8BITMIME"}
	}
	prov := startFakeProviderOffering(t, exts, log.wrap(sc.provider()))
	tr, pool := fakeTransportTo(t, prov)
	if sc.busyGets != nil {
		tr.Pool = &busyPool{countingPool: pool, busy: sc.busyGets}
	}
	lim := &countingLimiter{}
	tr.Limits = lim
	tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: "account", ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	tr.ProviderCircuit = limits.NewCircuit(limits.CircuitSettings{Name: "provider", MinRequests: 1, FailureRatio: 0.5, OpenTimeout: time.Hour})
	var out envelopeOutcome
	ctx := context.Background()
	d, errs, err := begin(ctx, tr, sc.rcpts)
	out.Begin = verdict(err)
	if err == nil {
		accepted := false
		for _, err := range errs {
			out.Verdicts = append(out.Verdicts, verdict(err))
			accepted = accepted || err == nil
		}
		if accepted {
			_, err := d.Body(ctx, memBody("Subject: parity\r\n\r\nbody\r\n"))
			out.Body = verdict(err)
		}
		d.Abort()
	}
	pool.Close() // the pooled connections say QUIT
	out.Delivered = log.messages()
	out.Conns, out.Discarded = prov.conns.Load(), pool.discarded.Load()
	out.Circuits = tr.Circuit.State() + "/" + tr.ProviderCircuit.State()
	lim.mu.Lock()
	out.Held, out.Commits, out.Cancels, out.Negative = lim.held, lim.commits, lim.cancels, lim.negative
	lim.mu.Unlock()
	return out
}

// script answers as accepting does, but with reply to the commands
// starting with prefix on the connections that on selects (nil: all);
// reply "" hangs up.
func script(prefix, reply string, on func(conn int) bool) func() respondFunc {
	return scripts(rule{prefix, reply, on})
}

type rule struct {
	prefix, reply string
	on            func(conn int) bool
}

func scripts(rules ...rule) func() respondFunc {
	return func() respondFunc {
		return func(conn int, line string) (string, bool) {
			for _, r := range rules {
				if strings.HasPrefix(line, r.prefix) && (r.on == nil || r.on(conn)) {
					return r.reply, r.reply == ""
				}
			}
			return accepting(line), false
		}
	}
}

func first(conn int) bool { return conn == 1 }
func later(conn int) bool { return conn > 1 }

const (
	closing = "421 4.7.0 closing"
	noUser  = "550 5.1.1 no such user"
)

var parityRcpts = []string{"a@example.net", "b@example.net"}

func envelopeScenarios() []envelopeScenario {
	delivered := func(conns, discarded int64, msgs ...string) envelopeOutcome {
		return envelopeOutcome{Delivered: msgs, Conns: conns, Discarded: discarded, Circuits: "closed/closed", Commits: 1}
	}
	withVerdicts := func(o envelopeOutcome, held int, v ...string) envelopeOutcome {
		o.Verdicts, o.Held = v, held
		return o
	}
	noneAccepted := func(conns, discarded int64, v ...string) envelopeOutcome {
		return envelopeOutcome{Verdicts: v, Conns: conns, Discarded: discarded, Circuits: "closed/closed", Cancels: 1}
	}
	ab := "a@example.net,b@example.net"
	return []envelopeScenario{
		{name: "all accepted", provider: script("", "", func(int) bool { return false }), rcpts: parityRcpts,
			want: withVerdicts(delivered(1, 0, ab), 2, "", "")},
		{name: "MAIL refused", rcpts: parityRcpts, provider: scripts(rule{"MAIL", "550 5.7.1 sender refused", nil},
			rule{"RCPT", "503 5.5.1 MAIL first", nil}, rule{"DATA", "503 5.5.1 MAIL first", nil}),
			want: envelopeOutcome{Begin: "550 provider", Conns: 1, Circuits: "closed/closed", Cancels: 1}},
		{name: "421 to MAIL", provider: script("MAIL", closing, first), rcpts: parityRcpts,
			want: withVerdicts(delivered(2, 1, ab), 2, "", "")},
		{name: "421 to MAIL on every connection", provider: script("MAIL", closing, nil), rcpts: parityRcpts,
			want: envelopeOutcome{Begin: "451 lost", Conns: 3, Discarded: 3, Circuits: "open/open", Cancels: 1}},
		{name: "421 after MAIL", provider: script("RCPT", closing, first), rcpts: parityRcpts,
			want: withVerdicts(delivered(2, 1, ab), 2, "", "")},
		{name: "no reply after MAIL", provider: script("RCPT", "", first), rcpts: parityRcpts,
			want: withVerdicts(delivered(2, 1, ab), 2, "", "")},
		{name: "no reply after an accepted recipient", provider: script("RCPT TO:<b", "", first), rcpts: parityRcpts,
			want: withVerdicts(delivered(2, 1, ab), 2, "", "")},
		{name: "421 after refused recipients", provider: errorLimit(2, false),
			rcpts: []string{"good1@example.net", "bad1@example.net", "bad2@example.net", "good2@example.net"},
			want:  withVerdicts(delivered(2, 1, "good1@example.net,good2@example.net"), 2, "", "550 provider", "550 provider", "")},
		{name: "421 after refused recipients without PIPELINING", extensions: []string{"8BITMIME"}, provider: errorLimit(2, false),
			rcpts: []string{"good1@example.net", "bad1@example.net", "bad2@example.net", "good2@example.net"},
			want:  withVerdicts(delivered(2, 1, "good1@example.net,good2@example.net"), 2, "", "550 provider", "550 provider", "")},
		{name: "no reply after refused recipients", provider: errorLimit(2, true),
			rcpts: []string{"bad1@example.net", "bad2@example.net", "good@example.net"},
			want:  withVerdicts(delivered(2, 1, "good@example.net"), 1, "550 provider", "550 provider", "")},
		{name: "421 at DATA with a recipient accepted", provider: errorLimit(2, false),
			rcpts: []string{"good@example.net", "bad1@example.net", "bad2@example.net"},
			want:  withVerdicts(delivered(2, 1, "good@example.net"), 1, "", "550 provider", "550 provider")},
		{name: "no reply at DATA with a recipient accepted", provider: script("DATA", "", first), rcpts: parityRcpts,
			want: withVerdicts(delivered(2, 1, ab), 2, "", "")},
		{name: "421 at DATA without recipients accepted", provider: errorLimit(2, false),
			rcpts: []string{"bad1@example.net", "bad2@example.net"},
			want:  noneAccepted(1, 1, "550 provider", "550 provider")},
		{name: "no reply at DATA without recipients accepted", provider: errorLimit(2, true),
			rcpts: []string{"bad1@example.net", "bad2@example.net"},
			want:  noneAccepted(1, 1, "550 provider", "550 provider")},
		{name: "421 at DATA without recipients accepted, without PIPELINING", extensions: []string{"8BITMIME"}, provider: errorLimit(2, false),
			rcpts: []string{"bad1@example.net", "bad2@example.net"},
			want:  noneAccepted(1, 1, "550 provider", "550 provider")},
		{name: "4xx to one recipient", provider: script("RCPT TO:<later", "452 4.2.2 mailbox full", nil),
			rcpts: []string{"a@example.net", "later@example.net", "b@example.net"},
			want:  withVerdicts(delivered(1, 0, ab), 2, "", "452 provider", "")},
		{name: "421 to one recipient on every connection", provider: script("RCPT TO:<doomed", closing, nil),
			rcpts: []string{"a@example.net", "doomed@example.net", "b@example.net"},
			want: envelopeOutcome{Verdicts: []string{"", "451 lost", ""}, Delivered: []string{ab}, Conns: 4, Discarded: 3,
				Circuits: "open/open", Held: 2, Commits: 1}},
		{name: "421 to every recipient", provider: script("RCPT", closing, nil), rcpts: parityRcpts,
			want: envelopeOutcome{Verdicts: []string{"451 lost", "451 lost"}, Conns: 6, Discarded: 6, Circuits: "open/open", Cancels: 1}},
		{name: "the pool busy when the connection breaks", provider: script("RCPT TO:<b", closing, first), busyGets: []int{2},
			rcpts: []string{"a@example.net", "b@example.net", "c@example.net"},
			// c is not tried, and keeps no share.
			want: withVerdicts(delivered(2, 1, "a@example.net"), 1, "", "451 busy")},
		{name: "MAIL refused on the replay", provider: scripts(rule{"RCPT TO:<b", closing, first}, rule{"MAIL", "451 4.3.0 not now", later}),
			rcpts: []string{"a@example.net", "b@example.net", "c@example.net"},
			// A 4xx to MAIL is held against the account (throttling).
			want: envelopeOutcome{Verdicts: []string{"", "451 provider", "451 provider"}, Body: "451 provider", Conns: 2, Discarded: 1,
				Circuits: "open/closed", Cancels: 1}},
		{name: "a recipient accepted earlier refused on the replay",
			// The connection that lacks a must not carry the message to c.
			provider: scripts(rule{"RCPT TO:<b", closing, first}, rule{"RCPT TO:<a", noUser, later}),
			rcpts:    []string{"a@example.net", "b@example.net", "c@example.net"},
			want: envelopeOutcome{Verdicts: []string{"", "451 provider", "451 provider"}, Body: "451 provider", Conns: 2, Discarded: 1,
				Circuits: "closed/closed", Cancels: 1}},
	}
}

// The pipelined envelope (BeginWith) and Begin with AddRcpt one at a
// time give the same verdicts, deliveries, connections, circuit outcomes
// and quota shares against the same provider, whatever breaks where.
func TestPipelinedEnvelopeMatchesStepwise(t *testing.T) {
	paths := []struct {
		name  string
		begin beginFunc
	}{{"stepwise", beginStepwise}, {"pipelined", beginPipelined}}
	for _, sc := range envelopeScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range paths {
				if diff := cmp.Diff(sc.want, sc.run(t, p.begin)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", p.name, diff)
				}
			}
		})
	}
}
