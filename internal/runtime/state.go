package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// built is everything derived from one configuration: the relay's State
// and the token sources behind it.
type built struct {
	cfg     *config.Config
	state   *relay.State
	store   *secrets.Store
	sources map[string]*oauth.Source // by credential name
}

// build resolves secrets and constructs token sources and upstream senders
// for a validated configuration. It opens no sockets.
func build(ctx context.Context, cfg *config.Config, log hclog.Logger) (*built, error) {
	store, err := secrets.Load(ctx, cfg.SecretRefs())
	if err != nil {
		return nil, fmt.Errorf("resolving secrets: %w", err)
	}
	b := &built{
		cfg:     cfg,
		store:   store,
		sources: map[string]*oauth.Source{},
		state: &relay.State{
			Hostname: cfg.Server.Hostname,
			DryRun:   cfg.Server.DryRun,
			Clients:  map[string]*relay.Client{},
			Accounts: map[string]*relay.Account{},
		},
	}
	type providerRuntime struct {
		http *http.Client
		smtp upstream.Settings
	}
	providers := map[string]providerRuntime{}
	for name, p := range cfg.Providers {
		roots, err := rootCAs(p.CAFile)
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", name, err)
		}
		host, _, _ := net.SplitHostPort(p.SMTPAddress)
		serverName := p.TLSServerName
		if serverName == "" {
			serverName = host
		}
		providers[name] = providerRuntime{
			http: oauth.NewHTTPClient(oauth.HTTPOptions{
				RootCAs:  roots,
				Timeout:  p.TokenTimeout,
				RetryMax: 3,
				Logger:   log.Named("token-http").With("provider", name),
			}),
			smtp: upstream.Settings{
				Address:        p.SMTPAddress,
				ImplicitTLS:    p.SMTPTLS == config.TLSImplicit,
				TLSConfig:      &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12},
				Mechanism:      p.AuthMechanism,
				LocalName:      cfg.Server.Hostname,
				ConnectTimeout: p.ConnectTimeout,
				CommandTimeout: p.CommandTimeout,
			},
		}
	}
	tokenLog := log.Named("oauth")
	upLog := log.Named("upstream")
	for _, g := range cfg.Groups {
		pr := providers[g.ProviderName]
		settings := func(name, subject string, rt config.SecretRef) oauth.Settings {
			return oauth.Settings{
				Name:                name,
				Flow:                g.Flow,
				TokenURL:            g.Provider.TokenURL,
				ClientID:            g.ClientID,
				Scopes:              g.Scopes,
				ClientSecret:        store.Getter(g.ClientSecret),
				ServiceAccountKey:   store.Getter(g.ServiceAccountKey),
				RefreshToken:        store.Getter(rt),
				Subject:             subject,
				RefreshBeforeExpiry: g.RefreshBeforeExpiry,
				ErrorBackoff:        g.TokenErrorBackoff,
				HTTPClient:          pr.http,
				Logger:              tokenLog.With("group", g.Name),
			}
		}
		var shared *oauth.Source
		if g.Flow == config.FlowClientCredentials {
			// An app-only token is issued to the application, not to a
			// mailbox: one token serves every account of the group.
			shared = oauth.NewSource(settings("group:"+g.Name, "", config.SecretRef{}))
			b.sources[shared.Name()] = shared
		}
		for _, a := range g.Accounts {
			src := shared
			if src == nil {
				src = oauth.NewSource(settings(a.Address, a.Address, a.RefreshToken))
				b.sources[src.Name()] = src
			}
			b.state.Accounts[a.Address] = &relay.Account{
				Address:  a.Address,
				Group:    g.Name,
				Provider: g.ProviderName,
				Upstream: upstream.NewSender(pr.smtp, a.Address, src, upLog.With("account", a.Address, "provider", g.ProviderName)),
			}
		}
		for _, c := range g.Clients {
			rc := &relay.Client{Name: c.Name, Group: g.Name, PasswordHash: c.PasswordHash, Allowed: map[string]*relay.Account{}}
			for _, s := range c.AllowedSenders {
				rc.Allowed[s] = b.state.Accounts[s]
			}
			b.state.Clients[c.Name] = rc
		}
	}
	return b, nil
}

// rootCAs returns the system roots plus the certificates of caFile.
func rootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
