package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
)

// A domain-wide account at max_mailboxes makes room only by forgetting a
// mailbox idle for more than a day (whose daily counts no longer matter);
// recent lists the mailboxes a reload carries over, newest first.
func TestDomainAccountEviction(t *testing.T) {
	now := time.Now()
	reg := newRegistry(hclog.NewNullLogger())
	da := &domainAccount{d: deps{registry: reg, log: hclog.NewNullLogger()}, boxes: map[string]*domainBox{}}
	box := func(addr string, idle time.Duration) {
		da.boxes[addr] = &domainBox{m: &mailbox{acct: &relay.Account{Address: addr}}, used: now.Add(-idle)}
	}
	box("new@x.test", time.Minute)
	box("day@x.test", 23*time.Hour)
	for _, b := range da.boxes {
		b.delivered.Store(true)
	}
	box("opening@x.test", time.Second) // opened at MAIL, not yet in use
	if da.evict(now) {
		t.Fatal("evicted a mailbox that delivered within the day, or one just opened")
	}
	box("old@x.test", 26*time.Hour)
	da.boxes["old@x.test"].inFlight.Add(1)
	if da.evict(now) {
		t.Fatal("evicted a mailbox with a delivery in flight")
	}
	da.boxes["old@x.test"].inFlight.Add(-1)
	if !da.evict(now) {
		t.Fatal("kept a mailbox idle for 26 hours at max_mailboxes")
	}
	if _, ok := da.boxes["old@x.test"]; ok {
		t.Fatalf("evicted another mailbox than the idle one: %v", da.boxes)
	}
	box("refused@x.test", 2*time.Minute) // never delivered
	if !da.evict(now) {
		t.Fatal("kept a mailbox that never delivered")
	}
	delete(da.boxes, "opening@x.test")
	if _, ok := da.boxes["old@x.test"]; ok || len(da.boxes) != 2 {
		t.Errorf("boxes after eviction: %v", da.boxes)
	}
	recent := da.recent(1)
	if len(recent) != 1 || recent[0].m.acct.Address != "new@x.test" {
		t.Errorf("recent(1) = %v", recent)
	}
}

// reviewDomainFixture is a domain-wide account over SMTP (app-only, so no
// token is fetched) with max_mailboxes = 1, outside any Runtime.
func reviewDomainFixture(t *testing.T, reg *registry) (deps, mailboxSpec, func() *built) {
	t.Helper()
	d := deps{registry: reg, log: hclog.NewNullLogger()}
	prov := &config.Provider{Name: "p", Transport: config.TransportSMTP, SMTPAddress: "127.0.0.1:1", SMTPTLS: config.TLSImplicit,
		ConnectTimeout: time.Second, CommandTimeout: time.Second}
	g := &config.AccountGroup{Name: "g", ProviderName: "p", Provider: prov, Flow: config.FlowClientCredentials}
	acct := &config.Account{Address: "*@x.test", Domain: "x.test", MaxMailboxes: 1, Group: g, MaxConnections: 1}
	spec := mailboxSpec{group: g, account: acct, source: oauth.NewSource(oauth.Settings{Name: "group:g"})}
	newBuilt := func() *built {
		return &built{
			cfg:   &config.Config{Server: config.Server{Hostname: "relay.test"}},
			plan:  reg.newPlan(),
			state: &relay.State{Accounts: map[string]*relay.Account{}},
		}
	}
	return d, spec, newBuilt
}

// A reload plans to keep the open mailboxes of a domain-wide account (same
// pool, limits, circuit, from the registry). If, before the plan is
// committed, the running configuration evicts one of them to open another
// (max_mailboxes reached, the evicted one idle for a day), forget closes
// the pool the new configuration's mailbox holds: after the reload that
// mailbox's every delivery fails ("upstream pool closed") until it is
// evicted again, which never happens while it is in use.
// Suggested fix: plan only what is still in the registry at commit (make
// commit or adopt re-check the carried-over mailboxes), or have forget
// not close a pool a pending plan uses (e.g. a plan generation counter,
// or closing evicted pools only through commit's stale list).
func TestReviewEvictionDuringReloadClosesCarriedPool(t *testing.T) {
	reg := newRegistry(hclog.NewNullLogger())
	d, spec, newBuilt := reviewDomainFixture(t, reg)
	old := newBuilt()
	oldDA := old.newDomainAccount(spec, d, nil)
	if _, err := oldDA.openMailbox("a@x.test"); err != nil {
		t.Fatal(err)
	}
	oldDA.boxes["a@x.test"].used = time.Now().Add(-26 * time.Hour)

	// The reload builds its plan: a@x.test is carried over.
	nb := newBuilt()
	newDA := nb.newDomainAccount(spec, d, oldDA)
	// Meanwhile a session of the running configuration opens b@x.test.
	if _, err := oldDA.openMailbox("b@x.test"); err != nil {
		t.Fatal(err)
	}
	stale := reg.commit(nb.plan, time.Now())
	for _, p := range stale {
		p.Close() // as retireState does once the old sessions ended
	}
	m := newDA.mailboxes()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := m.pool.TryGet(ctx)
	if err != nil && strings.Contains(err.Error(), "pool closed") {
		t.Errorf("the carried-over mailbox %s of the new configuration has a closed pool: %v", m.acct.Address, err)
	}
}
