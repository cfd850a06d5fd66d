package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

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
	vault   *secrets.Vault // nil without a vault block
	store   *secrets.Store
	sources map[string]*oauth.Source // by credential name
	// users maps each secret reference to the token sources built on it,
	// so that a rotation resets exactly those.
	users map[string][]*oauth.Source
}

// build logs in to Vault when configured, resolves secrets, and constructs
// token sources and upstream senders for a validated configuration. It
// opens no listening socket.
func build(ctx context.Context, cfg *config.Config, log hclog.Logger, sm *secrets.Metrics) (*built, error) {
	opts := []secrets.Option{secrets.WithLogger(log.Named("secrets")), secrets.WithMetrics(sm)}
	var vc *secrets.Vault
	if cfg.Vault != nil {
		var err error
		vc, err = secrets.NewVault(cfg.Vault, secrets.ResolveLocal, log.Named("vault"), sm)
		if err != nil {
			return nil, err
		}
		if err := vc.Login(ctx); err != nil {
			return nil, err
		}
		opts = append(opts, secrets.WithVault(vc, cfg.Vault.PollInterval))
	}
	store, err := secrets.Load(ctx, cfg.SecretRefs(), opts...)
	if err != nil {
		return nil, fmt.Errorf("resolving secrets: %w", err)
	}
	b := &built{
		cfg:     cfg,
		vault:   vc,
		store:   store,
		users:   map[string][]*oauth.Source{},
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
			refs := []config.SecretRef{g.ClientSecret, g.ServiceAccountKey, rt}
			set := oauth.Settings{
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
				Recheck:             func() bool { return store.Refresh(context.Background(), refs...) },
			}
			if g.WriteBack && rt.IsSet() {
				set.OnRotate = func(newRT string) {
					// Off the token path: a slow Vault must not delay mail.
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						if err := store.WriteBack(ctx, rt, newRT); err != nil {
							tokenLog.Warn("could not store the rotated refresh token", "account", subject, "reference", rt.String(), "error", err)
						}
					}()
				}
			}
			return set
		}
		track := func(src *oauth.Source, refs ...config.SecretRef) {
			for _, r := range refs {
				if r.IsSet() && r.Scheme != config.SecretLiteral {
					b.users[r.String()] = append(b.users[r.String()], src)
				}
			}
		}
		var shared *oauth.Source
		if g.Flow == config.FlowClientCredentials {
			// An app-only token is issued to the application, not to a
			// mailbox: one token serves every account of the group.
			shared = oauth.NewSource(settings("group:"+g.Name, "", config.SecretRef{}))
			b.sources[shared.Name()] = shared
			track(shared, g.ClientSecret)
		}
		for _, a := range g.Accounts {
			src := shared
			if src == nil {
				src = oauth.NewSource(settings(a.Address, a.Address, a.RefreshToken))
				b.sources[src.Name()] = src
				track(src, g.ClientSecret, g.ServiceAccountKey, a.RefreshToken)
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
	store.Subscribe(b.rotated)
	return b, nil
}

// rotated drops the cached tokens of the credentials whose secrets changed
// outside the relay; their next message fetches a token with the new
// secret, while deliveries in flight finish with the token they have.
func (b *built) rotated(changed []config.SecretRef) {
	for _, ref := range changed {
		for _, src := range b.users[ref.String()] {
			src.Reset()
		}
	}
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
