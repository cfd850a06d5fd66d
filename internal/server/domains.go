package server

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// domainIdle is how long a mailbox of a domain-wide account goes unused
// before it may make room for another: longer than a day, so that no
// daily quota it counts is forgotten while it matters.
const domainIdle = 25 * time.Hour

// domainGrace is how long a mailbox opened but never tried keeps its
// place: between MAIL (which opens it) and Begin it is not yet in use.
const domainGrace = time.Minute

// domainAccount serves a domain-wide account (README "Domain-wide
// accounts"): each mailbox of the domain gets a mailbox of its own —
// limits, circuit, pool and, for delegation, token — on first use, at
// most max_mailboxes at once.
//
// Mailboxes opened while the configuration runs go into the registry at
// once (they are new, nothing running depends on them); a reload opens
// again, in its plan, the mailboxes its predecessor had open, so they keep
// their limits and circuits. A mailbox first opened while a reload is
// being built is not carried over: it is opened again on its next use,
// and its count for the day restarts.
type domainAccount struct {
	b     *built
	relay *relay.Domain // the account as sessions see it
	d     deps
	spec  mailboxSpec // address unset; source set unless per mailbox

	mu    sync.Mutex
	boxes map[string]*domainBox
}

type domainBox struct {
	m    *mailbox
	used time.Time // guarded by the account's mu
	// inFlight counts its deliveries between Begin and their end;
	// tried is set once a delivery ended (or failed to begin), delivered
	// by its first delivered message.
	inFlight         atomic.Int64
	tried, delivered atomic.Bool
}

// newBox wraps a mailbox's transport so that the box knows whether it is
// in use and whether it ever delivered (see evict).
func newBox(m *mailbox, used time.Time) *domainBox {
	box := &domainBox{m: m, used: used}
	bt := &boxTransport{Transport: m.acct.Transport, box: box}
	m.acct.Transport = bt
	if eb, ok := bt.Transport.(transport.EnvelopeBeginner); ok {
		// Keep the pipelined envelope of the queue's deliveries.
		m.acct.Transport = &boxEnvelopeTransport{boxTransport: bt, eb: eb}
	}
	return box
}

// boxTransport counts a domain mailbox's deliveries.
type boxTransport struct {
	transport.Transport
	box *domainBox
}

func (t *boxTransport) Begin(ctx context.Context, env transport.Envelope) (transport.Delivery, error) {
	d, err := t.Transport.Begin(ctx, env)
	if err != nil {
		t.box.tried.Store(true)
		return nil, err
	}
	return t.started(d), nil
}

func (t *boxTransport) started(d transport.Delivery) transport.Delivery {
	t.box.inFlight.Add(1)
	return &boxDelivery{Delivery: d, box: t.box}
}

// boxEnvelopeTransport is a boxTransport over a transport that takes the
// whole envelope at once.
type boxEnvelopeTransport struct {
	*boxTransport
	eb transport.EnvelopeBeginner
}

func (t *boxEnvelopeTransport) BeginWith(ctx context.Context, env transport.Envelope, rcpts []string, opts []transport.RcptOptions) (transport.Delivery, []error, error) {
	d, errs, err := t.eb.BeginWith(ctx, env, rcpts, opts)
	if err != nil {
		t.box.tried.Store(true)
		return nil, nil, err
	}
	return t.started(d), errs, nil
}

// boxDelivery ends its count once, at Body, Reset or Abort (the contract
// ends a delivery with Body or Abort).
type boxDelivery struct {
	transport.Delivery
	box  *domainBox
	once sync.Once
}

func (d *boxDelivery) end() {
	d.once.Do(func() {
		d.box.tried.Store(true)
		d.box.inFlight.Add(-1)
	})
}

func (d *boxDelivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	defer d.end()
	res, err := d.Delivery.Body(ctx, msg)
	if err == nil {
		d.box.delivered.Store(true)
	}
	return res, err
}

func (d *boxDelivery) Reset(ctx context.Context) error {
	defer d.end()
	return d.Delivery.Reset(ctx)
}

func (d *boxDelivery) Abort() {
	d.Delivery.Abort()
	d.end()
}

// newDomainAccount prepares a domain-wide account; with prev (the same
// account in the previous configuration) it opens prev's mailboxes in
// b's plan, most recently used first.
func (b *built) newDomainAccount(spec mailboxSpec, d deps, prev *domainAccount) *domainAccount {
	da := &domainAccount{b: b, d: d, spec: spec, boxes: map[string]*domainBox{}}
	da.relay = &relay.Domain{Name: spec.account.Address, Open: da.open}
	if prev == nil {
		return da
	}
	for _, pb := range prev.recent(spec.account.MaxMailboxes) {
		addr := pb.m.acct.Address
		if _, static := b.state.Accounts[addr]; static {
			continue
		}
		box := newBox(da.build(b.plan, addr), pb.used)
		box.delivered.Store(pb.delivered.Load())
		da.boxes[addr] = box
	}
	return da
}

// open returns the Account of one mailbox of the domain, opening it if
// needed; its error is the reply to MAIL.
func (da *domainAccount) open(addr string) (*relay.Account, error) {
	m, err := da.openMailbox(addr)
	if err != nil {
		return nil, err
	}
	return m.acct, nil
}

// openMailbox returns one mailbox of the domain, opening it if needed.
func (da *domainAccount) openMailbox(addr string) (*mailbox, error) {
	if a := da.b.state.Accounts[addr]; a != nil {
		// An address declared as an account of its own is sent only by
		// that account, with its limits and its credential.
		return nil, relay.ErrSenderNotAllowed
	}
	da.mu.Lock()
	defer da.mu.Unlock()
	now := time.Now()
	if box := da.boxes[addr]; box != nil {
		box.used = now
		return box.m, nil
	}
	if len(da.boxes) >= da.spec.account.MaxMailboxes && !da.evict(now) {
		da.d.log.Warn("domain-wide account serves max_mailboxes mailboxes, each in use or sent with within a day; a new mailbox waits", "account", da.spec.account.Address, "max_mailboxes", da.spec.account.MaxMailboxes)
		return nil, relay.ErrDomainBusy
	}
	p := da.d.registry.newPlan()
	m := da.build(p, addr)
	da.d.registry.adopt(p, now)
	da.boxes[addr] = newBox(m, now)
	da.d.log.Debug("domain-wide account opened a mailbox", "account", da.spec.account.Address, "mailbox", addr, "open", len(da.boxes))
	return m, nil
}

// build makes one mailbox of the domain from p.
func (da *domainAccount) build(p *plan, addr string) *mailbox {
	s := da.spec
	s.address = addr
	if s.source == nil {
		// Delegation: a token per mailbox, for that subject.
		set := da.b.sourceSettings(s.group, s.pr, da.d, addr, addr, config.SecretRef{})
		s.source = p.source(da.b.sourceKey(s.group, set, config.SecretRef{}), set)
	}
	return da.b.newMailbox(p, s, da.d)
}

// evict forgets the least recently used mailbox that may go, and reports
// whether there was one. A mailbox may go when no delivery uses it and
// either it never delivered a message (it counts nothing a day's quota
// needs: a made-up or refused sender must not hold a place for a day) and
// was tried or opened more than domainGrace ago, or it has been idle for
// domainIdle.
func (da *domainAccount) evict(now time.Time) bool {
	var oldest string
	for addr, box := range da.boxes {
		idle := now.Sub(box.used)
		unproven := !box.delivered.Load() && (box.tried.Load() || idle >= domainGrace)
		mayGo := box.inFlight.Load() == 0 && (idle >= domainIdle || unproven)
		if mayGo && (oldest == "" || box.used.Before(da.boxes[oldest].used)) {
			oldest = addr
		}
	}
	if oldest == "" {
		return false
	}
	da.d.registry.forget(da.boxes[oldest].m)
	delete(da.boxes, oldest)
	if da.d.forget != nil {
		da.d.forget(oldest)
	}
	return true
}

// recent returns up to n mailboxes, most recently used first.
func (da *domainAccount) recent(n int) []*domainBox {
	da.mu.Lock()
	defer da.mu.Unlock()
	out := make([]*domainBox, 0, len(da.boxes))
	for _, box := range da.boxes {
		c := &domainBox{m: box.m, used: box.used}
		c.delivered.Store(box.delivered.Load())
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].used.After(out[j].used) })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// mailboxes returns the open mailboxes.
func (da *domainAccount) mailboxes() []*mailbox {
	da.mu.Lock()
	defer da.mu.Unlock()
	out := make([]*mailbox, 0, len(da.boxes))
	for _, box := range da.boxes {
		out = append(out, box.m)
	}
	return out
}

// rotated drops the tokens and pooled connections of the open mailboxes
// when one of the group's credentials changed.
func (da *domainAccount) rotated(changed []config.SecretRef) {
	g := da.spec.group
	hit := false
	for _, ref := range changed {
		for _, r := range g.CredentialRefs() {
			hit = hit || r.IsSet() && r.String() == ref.String()
		}
	}
	if !hit {
		return
	}
	for _, m := range da.mailboxes() {
		if m.source != da.spec.source {
			m.source.Reset() // the shared source is reset with the group's
		}
		if m.pool != nil {
			m.pool.Flush()
		}
	}
}

// sources returns the token sources of the open mailboxes, by mailbox,
// for delegation (an app-only account's source is its group's).
func (da *domainAccount) sources() map[string]*oauth.Source {
	out := map[string]*oauth.Source{}
	for _, m := range da.mailboxes() {
		if m.source != da.spec.source {
			out[m.acct.Address] = m.source
		}
	}
	return out
}
