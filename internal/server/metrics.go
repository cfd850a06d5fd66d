package server

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
)

// runtimeMetrics are the lifecycle's collectors, plus the per-account token
// state read from the current configuration at scrape time (so accounts
// removed by a reload disappear from /metrics).
type runtimeMetrics struct {
	reloads      *prometheus.CounterVec
	lastOK       prometheus.Gauge
	lastOKTime   prometheus.Gauge
	lastAttempt  prometheus.Gauge
	tokenExpiry  *prometheus.Desc
	lastRefresh  *prometheus.Desc
	failing      *prometheus.Desc
	sessionsDesc *prometheus.Desc
	rejected     *prometheus.Desc
	circuit      *prometheus.Desc
	quota        *prometheus.Desc
	r            *Runtime

	mu         sync.Mutex
	lastReload reloadStatus
}

// reloadStatus is the configuration part of /health/ready: since when the
// running configuration is in effect, and how the last reload went. A
// failed reload leaves the previous configuration running, so readiness
// does not change; this is where it shows.
type reloadStatus struct {
	LoadedAt    time.Time  `json:"loaded_at"`
	LastResult  string     `json:"last_reload_result"` // none, success, failure
	LastAttempt *time.Time `json:"last_reload_time,omitempty"`
	// LastError is the failed reload's error: it names files, places and
	// references, never a secret value or file content.
	LastError string `json:"last_reload_error,omitempty"`
	// Diagnostics are the last reload's warnings and errors, each as
	// "file:line:col: summary: detail" (the operator console shows them).
	Diagnostics []string `json:"last_reload_diagnostics,omitempty"`
	Reloads     int      `json:"reloads"` // successful reloads since the start
}

func newRuntimeMetrics(reg prometheus.Registerer, r *Runtime, version string) *runtimeMetrics {
	if version == "" {
		version = "dev"
	}
	m := &runtimeMetrics{
		r: r,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oauthrelay_config_reloads_total",
			Help: "Configuration reloads by result (success, failure).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_config_last_reload_successful",
			Help: "1 if the last configuration load or reload succeeded, 0 if it failed (the previous configuration is still running).",
		}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load or reload.",
		}),
		lastAttempt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oauthrelay_config_last_reload_timestamp_seconds",
			Help: "Unix time of the last configuration load or reload attempt.",
		}),
		tokenExpiry: prometheus.NewDesc("oauthrelay_access_token_expiry_timestamp_seconds",
			"Unix time at which the account's cached access token expires.", []string{"group", "account"}, nil),
		lastRefresh: prometheus.NewDesc("oauthrelay_token_last_refresh_success_timestamp_seconds",
			"Unix time of the account's last successful token refresh.", []string{"group", "account"}, nil),
		failing: prometheus.NewDesc("oauthrelay_refresh_token_failing",
			"1 while the account's token refresh is failing (for example invalid_grant), else 0.", []string{"group", "account"}, nil),
		sessionsDesc: prometheus.NewDesc("oauthrelay_sessions_in_use",
			"Client sessions holding a slot of the global concurrency cap.", nil, nil),
		rejected: prometheus.NewDesc("oauthrelay_sessions_rejected_total",
			"Connections refused with 421 4.3.2 because the global concurrency cap was reached.", nil, nil),
		circuit: prometheus.NewDesc("oauthrelay_circuit_state",
			"Circuit breaker state: 0 closed, 1 half-open, 2 open; by scope (account, provider) and name.", []string{"scope", "name"}, nil),
		quota: prometheus.NewDesc("oauthrelay_quota_usage_ratio",
			"Share of an account's rolling 24-hour quota used (1 = exhausted), by account and quota (daily_messages, daily_recipients).", []string{"account", "quota"}, nil),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "oauthrelay_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	// Both results exist from the start, at 0, so that increase() sees
	// the first failure.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReload.LastResult = "none"
	reg.MustRegister(m.reloads, m.lastOK, m.lastOKTime, m.lastAttempt, build, m)
	// Without a vault block, no Vault metric: a constant
	// oauthrelay_vault_up 0 would fire the Vault alerts on every install.
	r.deps.secrets.ExportVaultWhen(func() bool {
		b := r.current.Load()
		return b != nil && b.cfg.Vault != nil
	})
	return m
}

// loaded records the configuration loaded at start-up: successful, but
// not a reload.
func (m *runtimeMetrics) loaded(at time.Time) {
	m.lastOK.Set(1)
	m.lastOKTime.Set(float64(at.Unix()))
	m.lastAttempt.Set(float64(at.Unix()))
	m.mu.Lock()
	m.lastReload.LoadedAt = at
	m.mu.Unlock()
}

func (m *runtimeMetrics) reloadSucceeded(at time.Time) {
	m.reloads.WithLabelValues("success").Inc()
	m.lastOK.Set(1)
	m.lastOKTime.Set(float64(at.Unix()))
	m.lastAttempt.Set(float64(at.Unix()))
	m.mu.Lock()
	m.lastReload = reloadStatus{LoadedAt: at, LastResult: "success", LastAttempt: &at,
		Diagnostics: m.lastReload.Diagnostics, Reloads: m.lastReload.Reloads + 1}
	m.mu.Unlock()
}

// reloadFailed records a failed reload, with its error when the caller
// passes it.
func (m *runtimeMetrics) reloadFailed(errs ...error) {
	at := time.Now()
	m.reloads.WithLabelValues("failure").Inc()
	m.lastOK.Set(0)
	m.lastAttempt.Set(float64(at.Unix()))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastReload.LastResult, m.lastReload.LastAttempt, m.lastReload.LastError = "failure", &at, ""
	for _, err := range errs {
		if err != nil {
			m.lastReload.LastError = err.Error()
		}
	}
}

func (m *runtimeMetrics) reloadStatus() reloadStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.lastReload
	st.Diagnostics = slices.Clone(st.Diagnostics)
	return st
}

// reloadDiagnostics records the diagnostics of the reload under way (all
// of them: each step's are added).
func (m *runtimeMetrics) reloadDiagnostics(diags hcl.Diagnostics, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if first {
		m.lastReload.Diagnostics = nil
	}
	for _, d := range diags {
		m.lastReload.Diagnostics = append(m.lastReload.Diagnostics, config.FormatDiagnostic(d))
	}
}

// Describe implements prometheus.Collector.
func (m *runtimeMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.tokenExpiry
	ch <- m.lastRefresh
	ch <- m.failing
	ch <- m.sessionsDesc
	ch <- m.rejected
	ch <- m.circuit
	ch <- m.quota
}

// Collect implements prometheus.Collector.
func (m *runtimeMetrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.sessionsDesc, prometheus.GaugeValue, float64(m.r.sessions.InUse()))
	ch <- prometheus.MustNewConstMetric(m.rejected, prometheus.CounterValue, float64(m.r.sessions.Rejected()))
	b := m.r.current.Load()
	if b == nil {
		return
	}
	for id, br := range b.breakers {
		scope, name, _ := strings.Cut(id, ":")
		ch <- prometheus.MustNewConstMetric(m.circuit, prometheus.GaugeValue, br.StateValue(), scope, name)
	}
	for _, da := range b.domains {
		for _, mb := range da.mailboxes() {
			ch <- prometheus.MustNewConstMetric(m.circuit, prometheus.GaugeValue, mb.circuit.StateValue(), "account", mb.acct.Address)
		}
	}
	now := time.Now()
	for _, mb := range b.allMailboxes() {
		if mb.limits == nil {
			continue
		}
		for kind, used := range mb.limits.Usage(now) {
			ch <- prometheus.MustNewConstMetric(m.quota, prometheus.GaugeValue, used, mb.acct.Address, kind)
		}
	}
	type credential struct {
		group, account string
		src            *oauth.Source
	}
	var creds []credential
	for _, a := range b.cfg.Accounts() {
		creds = append(creds, credential{a.Group.Name, a.Address, b.sources[credentialName(a.Group.Flow, a.Group.Name, a.Address)]})
	}
	for _, da := range b.domains {
		for addr, src := range da.sources() {
			creds = append(creds, credential{da.spec.group.Name, addr, src})
		}
	}
	for _, c := range creds {
		if c.src == nil {
			continue
		}
		st := c.src.Status()
		labels := []string{c.group, c.account}
		if st.HasToken && !st.Expiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.tokenExpiry, prometheus.GaugeValue, float64(st.Expiry.Unix()), labels...)
		}
		if !st.LastRefresh.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.lastRefresh, prometheus.GaugeValue, float64(st.LastRefresh.Unix()), labels...)
		}
		failing := 0.0
		if st.Failing {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(m.failing, prometheus.GaugeValue, failing, labels...)
	}
}
