package server

import (
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
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
	Circuit     string     `json:"circuit"` // closed, half-open, open
	// QuotaUsed is the share used of each rolling 24-hour quota.
	QuotaUsed map[string]float64 `json:"quota_used,omitempty"`
}

// ready reports readiness for /health/ready: configuration loaded and
// listeners up; with ready_requires_all_accounts, also every account able
// to get a token. The body always lists each account's token state.
func (r *Runtime) ready() (bool, any) {
	b := r.current.Load()
	listening := int(r.listening.Load())
	accounts := map[string]accountStatus{}
	degraded := 0
	for _, a := range b.cfg.Accounts() {
		as := accountStatus{Group: a.Group.Name, Provider: a.Group.ProviderName, TokenState: "not_requested"}
		if src := b.sources[credentialName(a.Group.Flow, a.Group.Name, a.Address)]; src != nil {
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
		if t := b.transports[a.Address]; t != nil {
			if t.Circuit != nil {
				as.Circuit = t.Circuit.State()
			}
			if t.Limits != nil {
				if u := t.Limits.Usage(time.Now()); len(u) > 0 {
					as.QuotaUsed = u
				}
			}
		}
		if as.TokenState == "failing" || as.Circuit == "open" || as.Circuit == "half-open" {
			degraded++
		}
		accounts[a.Address] = as
	}
	providers := map[string]string{}
	for id, br := range b.breakers {
		if name, ok := strings.CutPrefix(id, "provider:"); ok {
			providers[name] = br.State()
		}
	}
	ready := listening > 0 && listening == len(b.cfg.Listeners) && !r.closing.Load()
	storeStatus, storeUp := r.durable.health()
	if !storeUp && queueListeners(b.cfg) > 0 {
		ready = false // its listeners answer 452 4.3.1 to every message
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
