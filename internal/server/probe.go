package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// ProbeStep is one step of an account check.
type ProbeStep struct {
	Name   string // secrets, token, connect, auth
	OK     bool
	Detail string
	Fix    string // what to do when the step failed
}

// ProbeAccount checks that the relay can send as address, without sending:
// resolve its secrets, obtain an access token, connect to the provider
// (TLS verified) and authenticate, then QUIT. It stops at the first failed
// step; the steps say what failed and how to fix it.
func ProbeAccount(ctx context.Context, cfg *config.Config, address string, log hclog.Logger) []ProbeStep {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	address = strings.ToLower(strings.TrimSpace(address))
	var acct *config.Account
	for _, g := range cfg.Groups {
		if a := g.Account(address); a != nil && (acct == nil || !a.IsDomain()) {
			acct = a
		}
	}
	if acct == nil || acct.IsDomain() && strings.HasPrefix(address, "*@") {
		var names []string
		for _, a := range cfg.Accounts() {
			names = append(names, a.Address)
		}
		return []ProbeStep{{Name: "account", Detail: fmt.Sprintf("%s is not an account of this configuration", address), Fix: "accounts: " + strings.Join(names, ", ") + " (name a mailbox of a domain-wide account)"}}
	}
	reg := newProbeDeps(log)
	b, err := build(ctx, cfg, reg, nil)
	if err != nil {
		return []ProbeStep{{Name: "secrets", Detail: err.Error(), Fix: "make the referenced secrets readable by the relay (Vault policy, file permissions, environment)"}}
	}
	defer b.plan.abort() // nothing of a probe is kept
	defer b.stopBackground()
	steps := []ProbeStep{{Name: "secrets", OK: true, Detail: describeRefs(acct)}}

	m, err := b.mailbox(address)
	if err != nil {
		return append(steps, ProbeStep{Name: "account", Detail: err.Error()})
	}
	src := m.source
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := src.Token(tctx); err != nil {
		step := ProbeStep{Name: "token", Detail: err.Error()}
		var oe *oauth.Error
		if errors.As(err, &oe) {
			step.Fix = oe.Hint()
			if strings.Contains(strings.ToLower(oe.Description), "jwt") && strings.Contains(strings.ToLower(oe.Description), "time") {
				step.Fix = "the token endpoint rejected the signed assertion's timestamps: check this host's clock (NTP)"
			}
		}
		step.Fix = joinFix(step.Fix, tlsFix(err))
		return append(steps, step)
	}
	st := src.Status()
	steps = append(steps, ProbeStep{Name: "token", OK: true, Detail: fmt.Sprintf("access token from %s (expires in %s)", acct.Group.Provider.TokenURL, time.Until(st.Expiry).Round(time.Second))})

	if m.pool == nil {
		return append(steps, probeHTTP(tctx, acct, m)...)
	}
	pool := m.pool
	c, _, err := pool.Get(tctx)
	if err != nil {
		var ue *upstream.Error
		step := ProbeStep{Name: "connect", Detail: err.Error()}
		if errors.As(err, &ue) && ue.Stage == upstream.StageAuth {
			steps = append(steps, ProbeStep{Name: "connect", OK: true, Detail: acct.Group.Provider.SMTPAddress + ", TLS verified"})
			step.Name = "auth"
			step.Fix = upstream.Diagnose(ue)
			if step.Fix == "" {
				step.Fix = "the provider refused the token; check the account address and the app's permissions"
			}
		} else {
			step.Fix = joinFix(tlsFix(err), "check smtp_address and that this host can reach it (firewall, proxy)")
		}
		pool.Close()
		return append(steps, step)
	}
	pool.Discard(c) // QUIT
	pool.Close()
	return append(steps,
		ProbeStep{Name: "connect", OK: true, Detail: fmt.Sprintf("%s, %s, certificate verified", acct.Group.Provider.SMTPAddress, acct.Group.Provider.SMTPTLS)},
		ProbeStep{Name: "auth", OK: true, Detail: acct.Group.Provider.AuthMechanism + " accepted"})
}

func newProbeDeps(log hclog.Logger) deps {
	return deps{registry: newRegistry(log), log: log}
}

func describeRefs(a *config.Account) string {
	var parts []string
	g := a.Group
	for _, ref := range []struct {
		name string
		r    config.SecretRef
	}{
		{"refresh_token", a.RefreshToken}, {"client_secret", g.ClientSecret}, {"service_account_key", g.ServiceAccountKey},
		{"client_certificate", g.ClientCertificate}, {"client_private_key", g.ClientPrivateKey},
	} {
		if ref.r.IsSet() {
			parts = append(parts, ref.name+" from "+ref.r.String())
		}
	}
	if len(parts) == 0 {
		return "no secrets needed"
	}
	return "resolved " + strings.Join(parts, ", ")
}

// tlsFix recognises certificate problems.
func tlsFix(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && strings.Contains(err.Error(), "unknown authority"):
		return "the server's certificate is not trusted: behind a TLS-inspecting proxy, set the provider's ca_file to the proxy's CA"
	case errors.As(err, &host):
		return "the server's certificate does not match its name: check smtp_address / tls_server_name"
	case strings.Contains(err.Error(), "certificate has expired or is not yet valid"):
		return "a certificate is expired or not yet valid: check this host's clock"
	}
	return ""
}

func joinFix(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// apiChecker is an HTTP transport that can check an account without
// sending (a message without recipients, which the provider refuses after
// checking the token and the mailbox).
type apiChecker interface {
	Check(ctx context.Context) (string, error)
}

// probeHTTP checks an HTTP transport's mailbox after its token.
func probeHTTP(ctx context.Context, acct *config.Account, m *mailbox) []ProbeStep {
	p := acct.Group.Provider
	name := map[string]string{config.TransportGraph: "graph", config.TransportGmailAPI: "gmail_api"}[p.Transport]
	t := m.acct.Transport
	if bt, ok := t.(*boxTransport); ok {
		t = bt.Transport // a domain-wide account's mailbox
	}
	c, ok := t.(apiChecker)
	if !ok {
		return []ProbeStep{{Name: name, Detail: "transport " + p.Transport + " cannot be checked without sending"}}
	}
	detail, err := c.Check(ctx)
	if err != nil {
		step := ProbeStep{Name: name, Detail: err.Error()}
		var f *httpsend.Failure
		if errors.As(err, &f) {
			step.Fix = f.Advice
		}
		step.Fix = joinFix(step.Fix, tlsFix(err))
		return []ProbeStep{step}
	}
	return []ProbeStep{{Name: name, OK: true, Detail: detail}}
}
