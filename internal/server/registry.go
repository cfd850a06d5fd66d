package server

import (
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// registry holds everything that outlives one configuration: token sources
// (with their cached tokens), upstream pools (with their authenticated
// connections), account limit counters (a reload must not reset a daily
// quota) and circuits (a reload must not close an open circuit). Each is
// keyed by a comparable key of exactly the settings it depends on, so an
// unchanged account keeps everything and a changed one gets new ones.
//
// Building a configuration only reads the registry: it produces a plan of
// what to reuse, what to create and what to update. The plan is applied by
// commit, after the new configuration was swapped in; a reload that fails
// before that changes nothing that runs (abort undoes what the plan made).
type registry struct {
	mu       sync.Mutex
	sources  map[sourceKey]*keptSource
	pools    map[poolKey]*upstream.Pool
	limits   map[limitsKey]limits.Limiter // nil values: no limits
	circuits map[circuitKey]*limits.Circuit
	log      hclog.Logger
	// pending counts plans not yet committed, aborted or adopted; while
	// one is, the pools of forgotten mailboxes are kept (in forgotten):
	// the plan may carry a mailbox over with its pool (see forget).
	pending   int
	forgotten []*upstream.Pool
}

type keptSource struct {
	src  *oauth.Source
	used time.Time
}

// sourceKey is everything a cached token depends on.
type sourceKey struct {
	name, flow, tokenURL, clientID, scopes, subject, caFile string
	tokenTimeout, refreshBefore, errorBackoff               time.Duration
	// secrets is a digest of the current secret values, so a changed
	// file:// secret gets a fresh source while an unchanged one keeps its
	// token.
	secrets [32]byte
}

// poolKey is everything an upstream connection depends on, the token
// source included: a pool never mixes connections of two credentials.
type poolKey struct {
	account, address, tlsMode, serverName, caFile, mechanism, localName string
	connectTimeout, commandTimeout                                      time.Duration
	source                                                              *oauth.Source
}

type limitsKey struct {
	account string
	limits  config.Limits
}

type circuitKey struct {
	scope, name string
	settings    config.CircuitConfig
}

// sourceRetention is how long a token source no configuration uses is
// kept, so that an account removed by one reload and restored by the next
// keeps its token.
const sourceRetention = time.Hour

func newRegistry(log hclog.Logger) *registry {
	return &registry{
		sources:  map[sourceKey]*keptSource{},
		pools:    map[poolKey]*upstream.Pool{},
		limits:   map[limitsKey]limits.Limiter{},
		circuits: map[circuitKey]*limits.Circuit{},
		log:      log,
	}
}

// plan is what one build needs from the registry.
type plan struct {
	r        *registry
	sources  map[sourceKey]*oauth.Source
	pools    map[poolKey]*upstream.Pool
	limits   map[limitsKey]limits.Limiter // nil values: no limits
	circuits map[circuitKey]*limits.Circuit
	// updates change reused entries; they run at commit.
	updates []func()
	// created are new pools, closed if the plan is aborted.
	created []*upstream.Pool
}

func (r *registry) newPlan() *plan {
	r.mu.Lock()
	r.pending++
	r.mu.Unlock()
	return &plan{
		r:        r,
		sources:  map[sourceKey]*oauth.Source{},
		pools:    map[poolKey]*upstream.Pool{},
		limits:   map[limitsKey]limits.Limiter{},
		circuits: map[circuitKey]*limits.Circuit{},
	}
}

// source returns the kept source for key (its settings updated at commit)
// or a new one.
func (p *plan) source(key sourceKey, set oauth.Settings) *oauth.Source {
	if src, ok := p.sources[key]; ok {
		return src
	}
	p.r.mu.Lock()
	kept := p.r.sources[key]
	p.r.mu.Unlock()
	var src *oauth.Source
	if kept != nil {
		src = kept.src
		p.updates = append(p.updates, func() { src.Update(set) })
	} else {
		src = oauth.NewSource(set)
	}
	p.sources[key] = src
	return src
}

// pool returns the kept pool for key (its limits updated at commit) or a
// new one.
func (p *plan) pool(key poolKey, sender *upstream.Sender, set upstream.PoolSettings, co *limits.Coordination) *upstream.Pool {
	if pool, ok := p.pools[key]; ok {
		return pool
	}
	p.r.mu.Lock()
	pool := p.r.pools[key]
	p.r.mu.Unlock()
	if pool != nil {
		p.updates = append(p.updates, func() {
			pool.SetLimits(set)
			if g, ok := pool.Gate().(*limits.ConnSlots); ok {
				g.SetSize(set.MaxConnections)
			}
		})
	} else {
		pool = upstream.NewPool(sender, set)
		if co != nil {
			// The mailbox's cap holds across the instances (README
			// "Several instances").
			g := co.ConnSlots("smtp:"+strings.ToLower(key.account), set.MaxConnections)
			g.OnContended(pool.DropIdle)
			pool.SetGate(g)
		}
		p.created = append(p.created, pool)
	}
	p.pools[key] = pool
	return pool
}

// accountLimits returns the kept limits for key or new ones (nil: none):
// shared through co when set, else the instance's own counters. New ones
// inherit the account's usage at commit (a changed limit must not reset a
// quota): the counters, or the instance's share of shared limits.
func (p *plan) accountLimits(key limitsKey, co *limits.Coordination) limits.Limiter {
	if l, ok := p.limits[key]; ok {
		return l
	}
	p.r.mu.Lock()
	l, ok := p.r.limits[key]
	p.r.mu.Unlock()
	if !ok {
		c := key.limits
		if co != nil {
			if s := co.NewSharedLimits(key.account, c.RateLimitPerMinute, c.RateLimitBurst, c.DailyMessageLimit, c.DailyRecipientLimit, c.MaxRecipientsPerMessage); s != nil {
				l = s
			}
		} else if a := limits.NewAccountLimits(c.RateLimitPerMinute, c.RateLimitBurst, c.DailyMessageLimit, c.DailyRecipientLimit, c.MaxRecipientsPerMessage); a != nil {
			l = a // a nil *AccountLimits would be a non-nil interface
		}
	}
	p.limits[key] = l
	return l
}

// circuit returns the kept circuit for key or a new one.
func (p *plan) circuit(key circuitKey) *limits.Circuit {
	if c, ok := p.circuits[key]; ok {
		return c
	}
	p.r.mu.Lock()
	c := p.r.circuits[key]
	p.r.mu.Unlock()
	if c == nil {
		log := p.r.log
		set := limits.CircuitSettings{
			Name:        key.scope + ":" + key.name,
			OpenTimeout: key.settings.OpenTimeout,
			OnChange: func(name, from, to string) {
				log.Warn("circuit breaker changed state", "circuit", name, "from", from, "to", to)
			},
		}
		if key.scope == "account" {
			set.ConsecutiveFailures = key.settings.FailureThreshold
		} else {
			set.Window, set.MinRequests, set.FailureRatio = key.settings.Window, key.settings.MinRequests, key.settings.FailureRatio
		}
		c = limits.NewCircuit(set)
	}
	p.circuits[key] = c
	return c
}

// abort undoes what the plan created; the registry never saw it.
func (p *plan) abort() {
	for _, pool := range p.created {
		pool.Close()
	}
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.planEndedLocked(nil)
}

// planEndedLocked ends one pending plan; once none is pending, the pools
// of forgotten mailboxes that kept (nil: none) does not use are closed.
func (r *registry) planEndedLocked(kept map[poolKey]*upstream.Pool) (stale []*upstream.Pool) {
	r.pending--
	if r.pending > 0 {
		return nil
	}
	used := map[*upstream.Pool]bool{}
	for _, pool := range kept {
		used[pool] = true
	}
	for _, pool := range r.forgotten {
		if !used[pool] {
			stale = append(stale, pool)
		}
	}
	r.forgotten = nil
	if kept == nil {
		for _, pool := range stale {
			pool.Close()
		}
		return nil
	}
	return stale
}

// commit makes the plan the registry's content: entries the plan uses are
// kept or added and updated; pools no longer used are returned, to be
// closed once the sessions of the previous configuration ended; limits and
// circuits no longer used are forgotten; sources are kept for
// sourceRetention.
func (r *registry) commit(p *plan, now time.Time) (stale []*upstream.Pool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stale = r.planEndedLocked(p.pools)
	for _, update := range p.updates {
		update()
	}
	for k, src := range p.sources {
		r.sources[k] = &keptSource{src: src, used: now}
	}
	for k, e := range r.sources {
		if now.Sub(e.used) > sourceRetention {
			delete(r.sources, k)
		}
	}
	for k, pool := range r.pools {
		if p.pools[k] != pool {
			stale = append(stale, pool)
		}
	}
	r.pools = p.pools
	for k, l := range p.limits {
		if _, kept := r.limits[k]; kept || l == nil {
			continue
		}
		// A changed limit must not reset a quota: local counts, or the
		// instance's share of shared ones (used while the database is
		// unreachable), go on from where they were.
		for old, ol := range r.limits {
			if old.account == k.account && ol != nil {
				limits.InheritUsage(l, ol)
			}
		}
	}
	r.limits, r.circuits = p.limits, p.circuits
	return stale
}

// allPools returns every pool in use.
func (r *registry) allPools() []*upstream.Pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*upstream.Pool, 0, len(r.pools))
	for _, p := range r.pools {
		out = append(out, p)
	}
	return out
}

// adopt adds what a plan made while a configuration runs (a mailbox of a
// domain-wide account opened on first use) without forgetting anything:
// unlike commit, it only adds.
func (r *registry) adopt(p *plan, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.planEndedLocked(nil)
	for _, update := range p.updates {
		update()
	}
	for k, src := range p.sources {
		r.sources[k] = &keptSource{src: src, used: now}
	}
	for k, pool := range p.pools {
		if _, ok := r.pools[k]; !ok {
			r.pools[k] = pool
		}
	}
	for k, l := range p.limits {
		if _, ok := r.limits[k]; !ok {
			r.limits[k] = l
		}
	}
	for k, c := range p.circuits {
		if _, ok := r.circuits[k]; !ok {
			r.circuits[k] = c
		}
	}
}

// forget removes one mailbox's entries (a domain-wide account's mailbox
// that makes room for another) and closes its pool — unless a plan is
// pending, which may have carried the mailbox over with that pool: then
// the pool is closed when no plan is pending, if the committed plan does
// not use it.
func (r *registry) forget(m *mailbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, pool := range r.pools {
		if pool == m.pool {
			delete(r.pools, k)
		}
	}
	for k, l := range r.limits {
		if l != nil && l == m.limits {
			delete(r.limits, k)
		}
	}
	for k, c := range r.circuits {
		if c == m.circuit {
			delete(r.circuits, k)
		}
	}
	for k, e := range r.sources {
		if e.src == m.source && k.subject == m.acct.Address {
			delete(r.sources, k)
		}
	}
	if m.pool == nil {
		return
	}
	if r.pending > 0 {
		r.forgotten = append(r.forgotten, m.pool)
		return
	}
	m.pool.Close()
}
