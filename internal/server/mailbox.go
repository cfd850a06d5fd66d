package server

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/gmailapi"
	"github.com/oauthrelay/oauthrelay/internal/graph"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/transport"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// mailbox is what the relay sends one mailbox's messages with: its
// transport, limits and circuit, and for SMTP its connection pool.
type mailbox struct {
	acct    *relay.Account
	circuit *limits.Circuit
	// provCircuit is the provider's, shared by its mailboxes.
	provCircuit *limits.Circuit
	limits      limits.Limiter // nil: no limits
	pool        *upstream.Pool // SMTP only
	source      *oauth.Source
	maxConns    int // concurrent queue deliveries (0: no cap)
}

// mailboxSpec is everything a mailbox is built from: the account that
// declares it (for a domain-wide account, the template) and the address.
type mailboxSpec struct {
	group   *config.AccountGroup
	account *config.Account
	address string
	pr      providerRuntime
	source  *oauth.Source
	// member is the mailbox's name in the provider's circuit ("" : its
	// address; a domain-wide account's "*@domain" for its mailboxes).
	member string
}

// newMailbox builds a mailbox from p's registry entries; it changes
// nothing that runs (see registry).
func (b *built) newMailbox(p *plan, s mailboxSpec, d deps) *mailbox {
	g, a, prov := s.group, s.account, s.group.Provider
	m := &mailbox{source: s.source, maxConns: a.MaxConnections}
	m.circuit = p.circuit(circuitKey{scope: "account", name: s.address, settings: prov.Circuit})
	m.provCircuit = p.circuit(circuitKey{scope: "provider", name: g.ProviderName, settings: prov.Circuit})
	m.limits = p.accountLimits(limitsKey{account: s.address, limits: a.Limits}, d.coord)
	lim := m.limits
	var t transport.Transport
	switch prov.Transport {
	case config.TransportGraph:
		t = &graph.Transport{Mailbox: m.api(s, lim, prov.GraphURL, d.log.Named("graph").With("provider", g.ProviderName), d.coord, graph.RequestsPerMailbox)}
	case config.TransportGmailAPI:
		t = &gmailapi.Transport{Mailbox: m.api(s, lim, prov.GmailAPIURL, d.log.Named("gmailapi").With("provider", g.ProviderName), d.coord, gmailapi.SendsPerMailbox)}
	default:
		m.pool = b.smtpPool(p, s, d)
		t = &upstream.Transport{
			Account: s.address, Member: s.member, Provider: g.ProviderName, Pool: m.pool,
			Limits: lim, Circuit: m.circuit, ProviderCircuit: m.provCircuit,
			Log: d.log.Named("upstream").With("provider", g.ProviderName),
		}
	}
	m.acct = &relay.Account{
		Address:       s.address,
		Group:         g.Name,
		Provider:      g.ProviderName,
		Transport:     t,
		MaxRecipients: a.Limits.MaxRecipientsPerMessage,
	}
	return m
}

// api is what an HTTP transport sends the mailbox's messages with; with
// co, its requests in flight are capped across instances (slots of their
// own: the API's limit is not the SMTP connections').
func (m *mailbox) api(s mailboxSpec, lim limits.Limiter, baseURL string, log hclog.Logger, co *limits.Coordination, perMailbox int) httpsend.Mailbox {
	mb := httpsend.Mailbox{
		Account: s.address, Member: s.member, BaseURL: baseURL, Tokens: s.source, HTTP: s.pr.api,
		Limits: lim, Circuit: m.circuit, ProviderCircuit: m.provCircuit, Log: log,
	}
	if co != nil {
		mb.Shared = co.RequestSlots("api:"+strings.ToLower(s.address), perMailbox)
	}
	return mb
}

// smtpPool returns the mailbox's pool of upstream SMTP connections.
func (b *built) smtpPool(p *plan, s mailboxSpec, d deps) *upstream.Pool {
	prov := s.group.Provider
	sender := upstream.NewSender(s.pr.smtp, s.address, s.source, d.log.Named("upstream").With("account", s.address, "provider", s.group.ProviderName))
	return p.pool(poolKey{
		account: s.address, address: prov.SMTPAddress, tlsMode: prov.SMTPTLS, serverName: prov.TLSServerName, caFile: prov.CAFile,
		mechanism: prov.AuthMechanism, localName: b.cfg.Server.Hostname, connectTimeout: prov.ConnectTimeout,
		commandTimeout: prov.CommandTimeout, source: s.source,
	}, sender, upstream.PoolSettings{
		MaxConnections:           s.account.MaxConnections,
		MaxMessagesPerConnection: prov.Pool.MaxMessagesPerConnection,
		IdleTimeout:              prov.Pool.IdleTimeout,
		MaxAge:                   prov.Pool.MaxAge,
		WaitTimeout:              prov.Pool.WaitTimeout,
	}, d.coord)
}

// apiHTTPClient is the client of a provider's HTTP transport: the
// provider's CA bundle (and proxy settings from the environment, as for
// the token endpoint), its connect timeout for dial and TLS handshake, and
// its command timeout for each answer. A request has no overall timeout
// (the upload of a large message takes as long as it takes); the
// delivery's context bounds it.
func apiHTTPClient(p *config.Provider, roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: p.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   p.ConnectTimeout,
		ResponseHeaderTimeout: p.CommandTimeout,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}}
}
