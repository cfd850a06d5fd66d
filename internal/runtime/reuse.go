package runtime

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// keeper holds what must outlive a reload when its settings did not
// change: upstream connection pools (so pooled, authenticated connections
// survive), account limit counters (a reload must not reset a daily
// quota), and circuit breakers (a reload must not close an open circuit).
type keeper struct {
	mu       sync.Mutex
	pools    map[string]keptPool
	limits   map[string]keptLimits
	breakers map[string]keptBreaker
	log      hclog.Logger
}

type keptPool struct {
	key  string
	pool *upstream.Pool
}

type keptLimits struct {
	key string
	l   *limits.AccountLimits
}

type keptBreaker struct {
	key string
	b   *limits.Breaker
}

func newKeeper(log hclog.Logger) *keeper {
	return &keeper{pools: map[string]keptPool{}, limits: map[string]keptLimits{}, breakers: map[string]keptBreaker{}, log: log}
}

// pool returns the account's pool, reused when the provider's connection
// settings are unchanged (its sender and limits are updated in place).
func (k *keeper) pool(account string, p *config.Provider, sender *upstream.Sender, set upstream.PoolSettings) (*upstream.Pool, bool) {
	key := fmt.Sprint(p.SMTPAddress, p.SMTPTLS, p.TLSServerName, p.CAFile, p.AuthMechanism, p.ConnectTimeout, p.CommandTimeout)
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.pools[account]; ok && e.key == key {
		e.pool.Update(sender, set)
		return e.pool, true
	}
	pool := upstream.NewPool(sender, set)
	k.pools[account] = keptPool{key: key, pool: pool}
	return pool, false
}

// limitsFor returns the account's limit counters, kept while its limits
// are unchanged.
func (k *keeper) limitsFor(account string, l config.Limits) *limits.AccountLimits {
	key := fmt.Sprint(l)
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.limits[account]; ok && e.key == key {
		return e.l
	}
	al := limits.NewAccountLimits(l.RateLimitPerMinute, l.RateLimitBurst, l.DailyMessageLimit, l.DailyRecipientLimit, l.MaxRecipientsPerMessage)
	k.limits[account] = keptLimits{key: key, l: al}
	return al
}

// breaker returns the breaker of scope/name, kept while its settings are
// unchanged.
func (k *keeper) breaker(scope, name string, c config.CircuitConfig) *limits.Breaker {
	id := scope + ":" + name
	key := fmt.Sprint(c)
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.breakers[id]; ok && e.key == key {
		return e.b
	}
	log := k.log
	b := limits.NewBreaker(id, c.FailureThreshold, c.OpenTimeout, func(name, from, to string) {
		log.Warn("circuit breaker changed state", "circuit", name, "from", from, "to", to)
	})
	k.breakers[id] = keptBreaker{key: key, b: b}
	return b
}

// prune forgets everything the configuration no longer uses and returns
// the pools to close once the sessions of the previous configuration ended.
func (k *keeper) prune(cfg *config.Config) []*upstream.Pool {
	used := map[string]bool{}
	for _, a := range cfg.Accounts() {
		used[a.Address] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var stale []*upstream.Pool
	for a, e := range k.pools {
		if !used[a] {
			stale = append(stale, e.pool)
			delete(k.pools, a)
		}
	}
	for a := range k.limits {
		if !used[a] {
			delete(k.limits, a)
		}
	}
	return stale
}

// pools returns every pool in use.
func (k *keeper) allPools() []*upstream.Pool {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*upstream.Pool, 0, len(k.pools))
	for _, e := range k.pools {
		out = append(out, e.pool)
	}
	return out
}
