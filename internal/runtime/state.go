package runtime

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/relay"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// deps are the long-lived pieces every build shares: metrics collectors
// are registered once per process.
type deps struct {
	sources  *sourcePool
	keeper   *keeper
	log      hclog.Logger
	secrets  *secrets.Metrics
	oauth    *oauth.Metrics
	upstream *upstream.Metrics
	redact   func(key, value string)
}

// built is everything derived from one configuration: the relay's State
// and the token sources behind it.
type built struct {
	cfg   *config.Config
	state *relay.State
	vault *secrets.Vault // nil without a vault block
	// vaultKey identifies the vault block's settings, to reuse the client
	// (and its login) across reloads that do not change them.
	vaultKey  string
	stopVault context.CancelFunc // ends the Vault token upkeep
	store     *secrets.Store
	stopWatch context.CancelFunc       // ends the store's rotation polling
	sources   map[string]*oauth.Source // by credential name
	users     map[string][]*oauth.Source
	// replaced are pools a reload swapped out for new ones (changed
	// connection settings); closed once the old sessions ended.
	replaced []*upstream.Pool
	pools    map[string]*upstream.Pool   // by account
	refPools map[string][]*upstream.Pool // secret reference -> pools of accounts using it
	breakers map[string]*limits.Breaker
}

// build logs in to Vault when configured, resolves secrets, and constructs
// token sources and upstream senders for a validated configuration. It
// opens no listening socket. With prev (a reload), it reuses prev's Vault
// client, its Vault reads, and the token sources — with their cached
// tokens — of credentials whose settings and secrets did not change.
func build(ctx context.Context, cfg *config.Config, d deps, prev *built) (*built, error) {
	log := d.log
	opts := []secrets.Option{secrets.WithLogger(log.Named("secrets")), secrets.WithMetrics(d.secrets)}
	b := &built{
		cfg:      cfg,
		users:    map[string][]*oauth.Source{},
		sources:  map[string]*oauth.Source{},
		pools:    map[string]*upstream.Pool{},
		refPools: map[string][]*upstream.Pool{},
		breakers: map[string]*limits.Breaker{},
		state: &relay.State{
			Hostname: cfg.Server.Hostname,
			DryRun:   cfg.Server.DryRun,
			Clients:  map[string]*relay.Client{},
			Accounts: map[string]*relay.Account{},
		},
	}
	if cfg.Vault != nil {
		b.vaultKey = vaultKey(cfg.Vault)
		if prev != nil && prev.vault != nil && prev.vaultKey == b.vaultKey {
			b.vault = prev.vault
		} else {
			vc, err := secrets.NewVault(cfg.Vault, secrets.ResolveLocal, log.Named("vault"), d.secrets)
			if err != nil {
				return nil, err
			}
			if err := vc.Login(ctx); err != nil {
				return nil, err
			}
			b.vault = vc
		}
		opts = append(opts, secrets.WithVault(b.vault, cfg.Vault.PollInterval))
	}
	if prev != nil {
		opts = append(opts, secrets.WithPrevious(prev.store))
	}
	store, err := secrets.Load(ctx, cfg.SecretRefs(), opts...)
	if err != nil {
		return nil, fmt.Errorf("resolving secrets: %w", err)
	}
	b.store = store

	type providerRuntime struct {
		http *http.Client
		smtp upstream.Settings
	}
	providers := map[string]providerRuntime{}
	for name, p := range cfg.Providers {
		roots, err := RootCAs(p.CAFile)
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
				Provider:       name,
				Metrics:        d.upstream,
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
				Group:               g.Name,
				Metrics:             d.oauth,
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
			if d.redact != nil {
				set.OnToken = func(at string, _ time.Time) { d.redact("token:"+name, at) }
			}
			if g.WriteBack && rt.IsSet() {
				set.OnRotate = func(newRT string) {
					if d.redact != nil {
						d.redact("refresh:"+name, newRT)
					}
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
		source := func(name, subject string, rt config.SecretRef) *oauth.Source {
			set := settings(name, subject, rt)
			key := sourceKey(g, set, store, rt)
			src := d.sources.get(name, key, set)
			b.sources[name] = src
			for _, r := range []config.SecretRef{g.ClientSecret, g.ServiceAccountKey, rt} {
				if r.IsSet() && r.Scheme != config.SecretLiteral {
					b.users[r.String()] = append(b.users[r.String()], src)
				}
			}
			return src
		}
		var shared *oauth.Source
		if g.Flow == config.FlowClientCredentials {
			// An app-only token is issued to the application, not to a
			// mailbox: one token serves every account of the group.
			shared = source("group:"+g.Name, "", config.SecretRef{})
		}
		for _, a := range g.Accounts {
			src := shared
			if src == nil {
				src = source(a.Address, a.Address, a.RefreshToken)
			}
			sender := upstream.NewSender(pr.smtp, a.Address, src, upLog.With("account", a.Address, "provider", g.ProviderName))
			pc := g.Provider.Pool
			var prevPool *upstream.Pool
			if prev != nil {
				prevPool = prev.pools[a.Address]
			}
			pool, _ := d.keeper.pool(a.Address, g.Provider, sender, upstream.PoolSettings{
				MaxConnections:           a.MaxConnections,
				MaxMessagesPerConnection: pc.MaxMessagesPerConnection,
				IdleTimeout:              pc.IdleTimeout,
				MaxAge:                   pc.MaxAge,
				WaitTimeout:              pc.WaitTimeout,
			})
			if prevPool != nil && prevPool != pool {
				b.replaced = append(b.replaced, prevPool)
			}
			b.pools[a.Address] = pool
			for _, r := range []config.SecretRef{g.ClientSecret, g.ServiceAccountKey, a.RefreshToken} {
				if r.IsSet() && r.Scheme != config.SecretLiteral {
					b.refPools[r.String()] = append(b.refPools[r.String()], pool)
				}
			}
			acctBreaker := d.keeper.breaker("account", a.Address, g.Provider.Circuit)
			provBreaker := d.keeper.breaker("provider", g.ProviderName, g.Provider.Circuit)
			b.breakers["account:"+a.Address], b.breakers["provider:"+g.ProviderName] = acctBreaker, provBreaker
			b.state.Accounts[a.Address] = &relay.Account{
				Address:         a.Address,
				Group:           g.Name,
				Provider:        g.ProviderName,
				Upstream:        pool,
				Limits:          d.keeper.limitsFor(a.Address, a.Limits),
				Breaker:         acctBreaker,
				ProviderBreaker: provBreaker,
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
	var prevState *relay.State
	if prev != nil {
		prevState = prev.state
	}
	b.state.SetAuthCache(prevState)
	store.Subscribe(b.rotated)
	d.sources.prune()
	return b, nil
}

// sourcePool keeps token sources across reloads, keyed by credential
// name and what they were built from, so that a reload — even one that
// removes an account and a later one that restores it — reuses cached
// tokens instead of asking the provider again. Sources unused for
// sourceRetention are dropped.
type sourcePool struct {
	mu sync.Mutex
	m  map[string]*pooledSource
}

type pooledSource struct {
	key  string
	src  *oauth.Source
	used time.Time
}

const sourceRetention = time.Hour

func newSourcePool() *sourcePool { return &sourcePool{m: map[string]*pooledSource{}} }

// get returns the pooled source for name when it was built from key,
// updated with set's getters and hooks; otherwise a new source.
func (p *sourcePool) get(name, key string, set oauth.Settings) *oauth.Source {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if e, ok := p.m[name]; ok && e.key == key {
		e.src.Update(set)
		e.used = now
		return e.src
	}
	src := oauth.NewSource(set)
	p.m[name] = &pooledSource{key: key, src: src, used: now}
	return src
}

// prune drops sources that no configuration used for sourceRetention.
func (p *sourcePool) prune() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, e := range p.m {
		if time.Since(e.used) > sourceRetention {
			delete(p.m, name)
		}
	}
}

// sourceKey captures everything a cached token depends on: the flow and
// endpoint, client, scopes, subject, provider transport settings, and a
// digest of the current secret values (so a changed file:// secret gets a
// fresh source, while an unchanged one keeps its token).
func sourceKey(g *config.AccountGroup, set oauth.Settings, store *secrets.Store, rt config.SecretRef) string {
	h := sha256.New()
	for _, ref := range []config.SecretRef{g.ClientSecret, g.ServiceAccountKey, rt} {
		v, _ := store.Get(ref)
		fmt.Fprintf(h, "%s=%s\x00", ref.String(), v)
	}
	p := g.Provider
	return strings.Join([]string{
		set.Flow, set.TokenURL, set.ClientID, strings.Join(set.Scopes, " "), set.Subject,
		p.CAFile, p.TokenTimeout.String(), set.RefreshBeforeExpiry.String(), set.ErrorBackoff.String(),
		hex.EncodeToString(h.Sum(nil)),
	}, "|")
}

// vaultKey identifies a vault block's settings, including its credentials'
// references (a literal token is compared by value).
func vaultKey(v *config.Vault) string {
	a := v.Auth
	return strings.Join([]string{
		v.Address, v.Namespace, v.CAFile, v.TLSServerName, a.Method, a.MountPath, a.Role, a.ServiceAccountTokenPath,
		fmt.Sprint(a.SecretIDWrapped), a.Token.String(), a.Token.Literal(), a.RoleID.String(), a.RoleID.Literal(),
		a.SecretID.String(), a.SecretID.Literal(),
	}, "\x00")
}

// rotated drops the cached tokens of the credentials whose secrets changed
// outside the relay; their next message fetches a token with the new
// secret, while deliveries in flight finish with the token they have.
func (b *built) rotated(changed []config.SecretRef) {
	for _, ref := range changed {
		for _, src := range b.users[ref.String()] {
			src.Reset()
		}
		// Pooled sessions authenticated with the old credentials are
		// closed too, so the new ones are in use at once.
		for _, p := range b.refPools[ref.String()] {
			p.Flush()
		}
	}
}

// startBackground starts Vault token upkeep (unless inherited) and the
// rotation polling.
func (b *built) startBackground(prev *built) {
	if b.vault == nil {
		return
	}
	if prev != nil && prev.vault == b.vault {
		b.stopVault, prev.stopVault = prev.stopVault, nil
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		b.stopVault = cancel
		go b.vault.KeepAlive(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stopWatch = cancel
	go b.store.Watch(ctx)
}

// stopBackground ends what startBackground started (and still owns).
func (b *built) stopBackground() {
	if b.stopWatch != nil {
		b.stopWatch()
	}
	if b.stopVault != nil {
		b.stopVault()
	}
}

// RootCAs returns the system roots plus the certificates of caFile (a
// provider's ca_file): what upstream TLS and token endpoints are verified
// against.
func RootCAs(caFile string) (*x509.CertPool, error) {
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
