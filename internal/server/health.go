package server

import (
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
)

// credentialName is the token source an account uses: its own, or its
// group's for app-only tokens.
func credentialName(flow, group, address string) string {
	if flow == config.FlowClientCredentials {
		return "group:" + group
	}
	return address
}

// accountStatus is one account's entry in /health/ready.
type accountStatus struct {
	Group       string     `json:"group"`
	Provider    string     `json:"provider"`
	TokenState  string     `json:"token_state"` // not_requested, valid, failing
	TokenExpiry *time.Time `json:"token_expiry,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Circuit     string     `json:"circuit,omitempty"` // closed, half-open, open; none for a domain-wide account
	// QuotaUsed is the share used of each rolling 24-hour quota.
	QuotaUsed map[string]float64 `json:"quota_used,omitempty"`
	// OpenMailboxes is set for a domain-wide account: how many of its
	// mailboxes are open (each listed on its own).
	OpenMailboxes *int `json:"open_mailboxes,omitempty"`
}

// mailboxStatus describes one mailbox: its token, circuit and quotas.
func mailboxStatus(g *config.AccountGroup, src *oauth.Source, m *mailbox) accountStatus {
	as := accountStatus{Group: g.Name, Provider: g.ProviderName}
	as.token(src)
	if m == nil {
		return as
	}
	if m.circuit != nil {
		as.Circuit = m.circuit.State()
	}
	if m.limits != nil {
		if u := m.limits.Usage(time.Now()); len(u) > 0 {
			as.QuotaUsed = u
		}
	}
	return as
}

// token describes a token source's state (none: "not_requested").
func (as *accountStatus) token(src *oauth.Source) {
	as.TokenState = "not_requested"
	if src == nil {
		return
	}
	st := src.Status()
	if st.HasToken {
		as.TokenState = "valid"
		exp := st.Expiry
		as.TokenExpiry = &exp
	}
	if !st.LastRefresh.IsZero() {
		lr := st.LastRefresh
		as.LastRefresh = &lr
	}
	if st.Failing {
		as.TokenState, as.LastError = "failing", st.LastError
	}
}

// degraded is 1 when the account cannot send now: its token is failing or
// its circuit is not closed.
func (as accountStatus) degraded() int {
	if as.TokenState == "failing" || as.Circuit == "open" || as.Circuit == "half-open" {
		return 1
	}
	return 0
}

// accountEntry is one account as /health/ready and the operator console
// list it.
type accountEntry struct {
	address string
	group   *config.AccountGroup
	status  accountStatus
	mailbox *mailbox // nil for a domain-wide account itself
	// opened marks a mailbox a domain-wide account opened on first use.
	// It is listed but does not make the relay degraded: a client can name
	// a mailbox that does not exist or that the provider refuses, and that
	// says nothing of the relay.
	opened bool
}

// accountEntries describes every configured account, then the mailboxes
// the domain-wide accounts opened.
func (b *built) accountEntries() []accountEntry {
	var out []accountEntry
	for _, a := range b.cfg.Accounts() {
		src := b.sources[credentialName(a.Group.Flow, a.Group.Name, a.Address)]
		if a.IsDomain() {
			// The domain-wide account itself: its app-only token (none for
			// delegation) and how many mailboxes it has open; each of them
			// is listed on its own.
			as := accountStatus{Group: a.Group.Name, Provider: a.Group.ProviderName}
			as.token(src)
			if da := b.domains[a.Domain]; da != nil {
				n := len(da.mailboxes())
				as.OpenMailboxes = &n
			}
			out = append(out, accountEntry{address: a.Address, group: a.Group, status: as})
			continue
		}
		m := b.mailboxes[a.Address]
		out = append(out, accountEntry{address: a.Address, group: a.Group, status: mailboxStatus(a.Group, src, m), mailbox: m})
	}
	for _, da := range b.domains {
		for _, m := range da.mailboxes() {
			out = append(out, accountEntry{address: m.acct.Address, group: da.spec.group,
				status: mailboxStatus(da.spec.group, m.source, m), mailbox: m, opened: true})
		}
	}
	return out
}

// ready reports readiness for /health/ready: configuration loaded and
// listeners up; with ready_requires_all_accounts, also every account able
// to get a token. The body always lists each account's token state.
func (r *Runtime) ready() (bool, any) {
	b := r.current.Load()
	listening := int(r.listening.Load())
	accounts := map[string]accountStatus{}
	degraded := 0
	for _, e := range b.accountEntries() {
		if !e.opened {
			degraded += e.status.degraded()
		}
		accounts[e.address] = e.status
	}
	providers := map[string]string{}
	for id, br := range b.breakers {
		if name, ok := strings.CutPrefix(id, "provider:"); ok {
			providers[name] = br.State()
		}
	}
	ready := listening > 0 && listening == len(b.cfg.Listeners) && !r.closing.Load()
	storeStatus, storeUp := r.durable.health()
	if !storeUp && queueListeners(b.cfg) > 0 && !sharedStore(b.cfg) {
		// Its listeners answer 452 4.3.1 to every message. A shared
		// database's outage is every instance's: failing them all would
		// only make a load balancer or autoscaler replace healthy
		// instances, and direct listeners still work (reported as
		// degraded below).
		ready = false
	}
	if b.cfg.Telemetry.ReadyRequiresAllAccounts && degraded > 0 {
		ready = false
	}
	status := "ready"
	switch {
	case !ready:
		status = "not_ready"
	case degraded > 0:
		status = "degraded"
	}
	body := map[string]any{
		"status":            status,
		"listeners":         listening,
		"degraded_accounts": degraded,
		"accounts":          accounts,
		"provider_circuits": providers,
		"config_files":      b.cfg.Files,
		"config":            r.metrics.reloadStatus(),
	}
	if storeStatus != nil {
		body["store"] = storeStatus
		if !storeUp && status == "ready" {
			body["status"] = "degraded"
		}
	}
	if limitsStatus, degraded := r.sharedLimitsHealth(); limitsStatus != nil {
		body["limits"] = limitsStatus
		if degraded && body["status"] == "ready" {
			body["status"] = "degraded"
		}
	}
	if configured, up, expiry := b.store.VaultStatus(); configured {
		v := map[string]any{"up": up}
		if !expiry.IsZero() {
			v["token_expiry"] = expiry
		}
		body["vault"] = v
	}
	return ready, body
}

// queueListeners counts the listeners that store and forward.
func queueListeners(cfg *config.Config) int {
	n := 0
	for _, l := range cfg.Listeners {
		if l.Delivery == config.DeliveryQueue {
			n++
		}
	}
	return n
}
