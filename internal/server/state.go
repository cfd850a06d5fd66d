package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
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
// are registered once per process, and the registry keeps what outlives a
// configuration.
type deps struct {
	registry *registry
	log      hclog.Logger
	secrets  *secrets.Metrics
	oauth    *oauth.Metrics
	upstream *upstream.Metrics
	redact   func(key, value string)
	// forget removes the metric series of a mailbox the relay no longer
	// serves (nil: none).
	forget func(account string)
	// coord shares limits and connection slots with the other instances
	// on one database (nil: this instance alone).
	coord *limits.Coordination
}

// built is everything derived from one configuration: the relay's State
// and the token sources behind it.
type built struct {
	cfg   *config.Config
	state *relay.State
	plan  *plan
	vault *secrets.Vault // nil without a vault block
	// vaultKey identifies the vault block's settings, to reuse the client
	// (and its login) across reloads that do not change them.
	vaultKey  vaultKey
	stopVault context.CancelFunc // ends the Vault token upkeep
	store     *secrets.Store
	stopWatch context.CancelFunc       // ends the store's rotation polling
	sources   map[string]*oauth.Source // by credential name
	users     map[string][]*oauth.Source
	pools     map[string]*upstream.Pool   // by account
	refPools  map[string][]*upstream.Pool // secret reference -> pools of accounts using it
	breakers  map[string]*limits.Circuit  // "scope:name"
	// mailboxes are the accounts' mailboxes, by address.
	mailboxes map[string]*mailbox
	// domains are the domain-wide accounts, by domain.
	domains map[string]*domainAccount
}

// providerRuntime is how one provider is reached.
type providerRuntime struct {
	http *http.Client // token endpoint
	api  *http.Client // HTTP transport (Graph, Gmail API)
	smtp upstream.Settings
}

// build turns a validated configuration into a State, step by step: Vault
// login (or the previous client), secrets, providers, then each group's
// token sources, pools, limits and circuits. It opens no listening socket
// and changes nothing that runs: what it reuses from the registry is
// updated only when the result is committed (see registry). With prev (a
// reload) it reuses prev's Vault client and Vault reads.
func build(ctx context.Context, cfg *config.Config, d deps, prev *built) (*built, error) {
	b, err := prepare(ctx, cfg, d, prev)
	if err != nil {
		return nil, err
	}
	return b.assemble(d, prev)
}

// prepare starts a build: Vault login and secrets, what the store needs
// before the accounts are built (a shared database's limits). On error the
// plan is aborted; else assemble (or plan.abort) must follow.
func prepare(ctx context.Context, cfg *config.Config, d deps, prev *built) (*built, error) {
	b := &built{
		cfg:       cfg,
		plan:      d.registry.newPlan(),
		users:     map[string][]*oauth.Source{},
		sources:   map[string]*oauth.Source{},
		pools:     map[string]*upstream.Pool{},
		refPools:  map[string][]*upstream.Pool{},
		breakers:  map[string]*limits.Circuit{},
		mailboxes: map[string]*mailbox{},
		domains:   map[string]*domainAccount{},
		state: &relay.State{
			Hostname:          cfg.Server.Hostname,
			DryRun:            cfg.Server.DryRun,
			HideClientAddress: cfg.Server.ReceivedHideClient,
			Clients:           map[string]*relay.Client{},
			Accounts:          map[string]*relay.Account{},
		},
	}
	if err := b.loadSecrets(ctx, d, prev); err != nil {
		b.plan.abort()
		return nil, err
	}
	return b, nil
}

// assemble builds the providers, accounts and clients of a prepared build;
// on error its plan is aborted.
func (b *built) assemble(d deps, prev *built) (*built, error) {
	cfg := b.cfg
	ok := false
	defer func() {
		if !ok {
			b.plan.abort()
		}
	}()
	providers, err := buildProviders(cfg, d)
	if err != nil {
		return nil, err
	}
	for _, g := range cfg.Groups {
		b.buildGroup(g, providers[g.ProviderName], d, prev)
	}
	var prevState *relay.State
	if prev != nil {
		prevState = prev.state
	}
	b.state.SetAuthCache(prevState)
	b.store.Subscribe(b.rotated)
	ok = true
	return b, nil
}

// loadSecrets logs in to Vault (or keeps prev's client when the vault
// block is unchanged) and resolves every secret reference.
func (b *built) loadSecrets(ctx context.Context, d deps, prev *built) error {
	cfg := b.cfg
	opts := []secrets.Option{secrets.WithLogger(d.log.Named("secrets")), secrets.WithMetrics(d.secrets)}
	if cfg.Vault != nil {
		b.vaultKey = vaultKeyOf(cfg.Vault)
		if prev != nil && prev.vault != nil && prev.vaultKey == b.vaultKey {
			b.vault = prev.vault
		} else {
			vc, err := secrets.NewVault(cfg.Vault, secrets.ResolveLocal, d.log.Named("vault"), d.secrets)
			if err != nil {
				return err
			}
			if err := vc.Login(ctx); err != nil {
				return err
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
		return fmt.Errorf("resolving secrets: %w", err)
	}
	b.store = store
	return nil
}

// buildProviders prepares each provider's token HTTP client and SMTP
// settings.
func buildProviders(cfg *config.Config, d deps) (map[string]providerRuntime, error) {
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
				Logger:   d.log.Named("token-http").With("provider", name),
			}),
			api: apiHTTPClient(p, roots),
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
	return providers, nil
}

// buildGroup adds a group's accounts and clients to the State.
func (b *built) buildGroup(g *config.AccountGroup, pr providerRuntime, d deps, prev *built) {
	var shared *oauth.Source
	if g.Flow == config.FlowClientCredentials {
		// An app-only token is issued to the application, not to a
		// mailbox: one token serves every account of the group.
		shared = b.tokenSource(g, pr, d, "group:"+g.Name, "", config.SecretRef{})
	}
	for _, a := range g.Accounts {
		if a.IsDomain() {
			continue // after the group's own mailboxes, which it must not serve
		}
		src := shared
		if src == nil {
			src = b.tokenSource(g, pr, d, a.Address, a.Address, a.RefreshToken)
		}
		b.buildAccount(g, a, pr, src, d)
	}
	for _, a := range g.Accounts {
		if a.IsDomain() {
			var before *domainAccount
			if prev != nil && prev.domains[a.Domain] != nil && prev.domains[a.Domain].spec.group.Name == g.Name {
				before = prev.domains[a.Domain]
			}
			b.domains[a.Domain] = b.newDomainAccount(mailboxSpec{group: g, account: a, pr: pr, source: shared, member: a.Address}, d, before)
			provKey := circuitKey{scope: "provider", name: g.ProviderName, settings: g.Provider.Circuit}
			b.breakers["provider:"+g.ProviderName] = b.plan.circuit(provKey)
		}
	}
	for _, c := range g.Clients {
		b.state.Clients[c.Name] = b.buildClient(g, c)
	}
}

// buildClient turns a client's allowed senders and send_as into the
// accounts that send them.
func (b *built) buildClient(g *config.AccountGroup, c *config.Client) *relay.Client {
	rc := &relay.Client{
		Name: c.Name, Group: g.Name, PasswordHash: c.PasswordHash,
		Allowed: map[string]*relay.Account{}, Mailboxes: map[string]*relay.Domain{}, Domains: map[string]*relay.Domain{},
	}
	for _, s := range c.AllowedSenders {
		if domain, ok := strings.CutPrefix(s, "*@"); ok {
			rc.Domains[domain] = b.domains[domain].relay
		} else if a := b.state.Accounts[s]; a != nil && a.Group == g.Name {
			rc.Allowed[s] = a
		} else if da := b.domainOf(s); da != nil {
			rc.Mailboxes[s] = da.relay
		}
	}
	for _, n := range c.Networks {
		rc.Networks = append(rc.Networks, n.Prefix)
	}
	if c.SendAs != "" {
		if a := b.state.Accounts[c.SendAs]; a != nil && a.Group == g.Name {
			rc.SendAs = a
		} else if da := b.domainOf(c.SendAs); da != nil {
			rc.SendAsMailbox, rc.SendAsDomain = c.SendAs, da.relay
		}
	}
	return rc
}

// domainOf returns the domain-wide account of addr's domain, or nil.
func (b *built) domainOf(addr string) *domainAccount {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return nil
	}
	return b.domains[addr[at+1:]]
}

// mailbox returns the mailbox that sends as addr: an account's, or one of
// a domain-wide account, opened if needed.
func (b *built) mailbox(addr string) (*mailbox, error) {
	if m := b.mailboxes[addr]; m != nil {
		return m, nil
	}
	if da := b.domainOf(addr); da != nil {
		return da.openMailbox(addr)
	}
	return nil, relay.ErrSenderNotAllowed
}

// allMailboxes returns every mailbox: the accounts' and those the
// domain-wide accounts have open.
func (b *built) allMailboxes() []*mailbox {
	out := make([]*mailbox, 0, len(b.mailboxes))
	for _, m := range b.mailboxes {
		out = append(out, m)
	}
	for _, da := range b.domains {
		out = append(out, da.mailboxes()...)
	}
	return out
}

// buildAccount adds one account: its pool, limits and circuits.
func (b *built) buildAccount(g *config.AccountGroup, a *config.Account, pr providerRuntime, src *oauth.Source, d deps) {
	m := b.newMailbox(b.plan, mailboxSpec{group: g, account: a, address: a.Address, pr: pr, source: src}, d)
	b.addMailbox(m)
	if m.pool != nil {
		b.pools[a.Address] = m.pool
		for _, r := range append(g.CredentialRefs(), a.RefreshToken) {
			if r.IsSet() && r.Scheme != config.SecretLiteral {
				b.refPools[r.String()] = append(b.refPools[r.String()], m.pool)
			}
		}
	}
	b.state.Accounts[a.Address] = m.acct
}

// addMailbox records a mailbox's circuits for metrics and health.
func (b *built) addMailbox(m *mailbox) {
	addr := m.acct.Address
	b.mailboxes[addr] = m
	b.breakers["account:"+addr] = m.circuit
	b.breakers["provider:"+m.acct.Provider] = m.provCircuit
}

// tokenSource returns the source of one credential, reused from the
// registry when nothing it depends on changed.
func (b *built) tokenSource(g *config.AccountGroup, pr providerRuntime, d deps, name, subject string, rt config.SecretRef) *oauth.Source {
	set := b.sourceSettings(g, pr, d, name, subject, rt)
	src := b.plan.source(b.sourceKey(g, set, rt), set)
	b.sources[name] = src
	for _, r := range append(g.CredentialRefs(), rt) {
		if r.IsSet() && r.Scheme != config.SecretLiteral {
			b.users[r.String()] = append(b.users[r.String()], src)
		}
	}
	return src
}

func (b *built) sourceSettings(g *config.AccountGroup, pr providerRuntime, d deps, name, subject string, rt config.SecretRef) oauth.Settings {
	store := b.store
	tokenLog := d.log.Named("oauth")
	refs := append(g.CredentialRefs(), rt)
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
		ClientCertificate:   store.Getter(g.ClientCertificate),
		ClientPrivateKey:    store.Getter(g.ClientPrivateKey),
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

// sourceKey captures everything a cached token depends on, with a digest
// of the current secret values.
func (b *built) sourceKey(g *config.AccountGroup, set oauth.Settings, rt config.SecretRef) sourceKey {
	h := sha256.New()
	for _, ref := range append(g.CredentialRefs(), rt) {
		v, _ := b.store.Get(ref)
		fmt.Fprintf(h, "%s=%s\x00", ref.String(), v)
	}
	k := sourceKey{
		name: set.Name, flow: set.Flow, tokenURL: set.TokenURL, clientID: set.ClientID,
		scopes: strings.Join(set.Scopes, " "), subject: set.Subject, caFile: g.Provider.CAFile,
		tokenTimeout: g.Provider.TokenTimeout, refreshBefore: set.RefreshBeforeExpiry, errorBackoff: set.ErrorBackoff,
	}
	copy(k.secrets[:], h.Sum(nil))
	return k
}

// vaultKey identifies a vault block's settings, including its credentials'
// references (a literal is compared by value), so that a reload that
// changes none of them keeps the Vault client and its login.
type vaultKey struct {
	address, namespace, caFile, serverName, method, mount, role, saTokenPath, region, header string
	wrapped                                                                                  bool
	token, roleID, secretID                                                                  secretIdentity
}

type secretIdentity struct{ ref, literal string }

func identify(r config.SecretRef) secretIdentity { return secretIdentity{r.String(), r.Literal()} }

func vaultKeyOf(v *config.Vault) vaultKey {
	a := v.Auth
	return vaultKey{
		address: v.Address, namespace: v.Namespace, caFile: v.CAFile, serverName: v.TLSServerName,
		method: a.Method, mount: a.MountPath, role: a.Role, saTokenPath: a.ServiceAccountTokenPath,
		region: a.Region, header: a.HeaderValue, wrapped: a.SecretIDWrapped,
		token: identify(a.Token), roleID: identify(a.RoleID), secretID: identify(a.SecretID),
	}
}

// rotated drops the cached tokens of the credentials whose secrets changed
// outside the relay; their next message fetches a token with the new
// secret, while deliveries in flight finish with the token they have.
func (b *built) rotated(changed []config.SecretRef) {
	for _, da := range b.domains {
		da.rotated(changed)
	}
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
