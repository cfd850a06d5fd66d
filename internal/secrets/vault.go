package secrets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	awsauth "github.com/hashicorp/vault/api/auth/aws"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// Vault is the relay's Vault client: it logs in with the configured auth
// method, keeps its token alive (LifetimeWatcher renewal, then a fresh login
// when renewal ends), and reads and writes KV v2 secrets. It is the only
// owner of retries: the api client's own retries are off.
type Vault struct {
	cfg     *config.Vault
	client  *vault.Client
	log     hclog.Logger
	resolve func(config.SecretRef) (string, error)
	metrics *Metrics

	mu          sync.Mutex
	loginSecret *vault.Secret
	tokenExpiry time.Time // zero: does not expire
	logins      int
	renewals    int
	valueHook   func(key, value string)
	// A response-wrapping token can be unwrapped once: the secret ID it
	// held is kept (in memory only) for the logins that follow, together
	// with the wrapping token it came from, so that a freshly delivered
	// one is recognised and unwrapped.
	unwrappedFrom, secretID string
	// held are values read through this client for other parts of the
	// package (database passwords), reported to the value hook like the
	// token; loginSubs are poked after each login.
	held      map[string]string
	loginSubs map[chan struct{}]bool
	// up and lastError: the outcome of the last call (Status).
	up        bool
	lastError string
}

// ErrNotFound is returned for a KV path that holds no secret.
var ErrNotFound = errors.New("no such secret (or it was deleted)")

// StoreValue writes value into field of a KV v2 secret, creating the
// secret if needed and keeping its other fields; check-and-set on the
// version read protects a concurrent writer.
func (v *Vault) StoreValue(ctx context.Context, mount, path, field, value string) (int, error) {
	fields, cas := map[string]string{}, 0
	cur, err := v.read(ctx, mount, path)
	switch {
	case err == nil:
		fields, cas = cur.fields, cur.version
	case !errors.Is(err, ErrNotFound):
		return 0, err
	}
	fields[field] = value
	return v.write(ctx, mount, path, fields, cas)
}

// ErrCASConflict is returned by WriteField when another writer changed the
// secret since the version given.
var ErrCASConflict = errors.New("check-and-set conflict: the secret changed since it was read")

// NewVault creates the client; it does not log in. resolve reads the
// login credentials (env://, file:// or literal references).
func NewVault(cfg *config.Vault, resolve func(config.SecretRef) (string, error), log hclog.Logger, m *Metrics) (*Vault, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Vault{cfg: cfg, client: c, log: log, resolve: resolve, metrics: m}, nil
}

// Client returns the Vault API client, for callers that use another
// secrets engine through the relay's login (the seal package's Transit
// sealer). Login sets its token and KeepAlive renews or replaces that
// token in place: call Client, or hold the method value, at each use
// instead of keeping a token.
func (v *Vault) Client() *vault.Client { return v.client }

// newClient builds an API client from the vault block alone.
// vault.DefaultConfig reads VAULT_ADDR, VAULT_AGENT_ADDR, VAULT_SKIP_VERIFY,
// VAULT_CACERT, VAULT_CLIENT_CERT, VAULT_TLS_SERVER_NAME and more from the
// environment: a variable left in a unit file or a shell could turn
// certificate verification off or send the relay's credentials to
// another server. None is used, and certificates are always verified.
func newClient(cfg *config.Vault) (*vault.Client, error) {
	tlsCfg, err := vaultTLS(cfg)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	transport.TLSHandshakeTimeout = 10 * time.Second
	c, err := vault.NewClient(&vault.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{
			Transport: transport,
			// The api client follows Vault's redirects itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:    15 * time.Second,
		MaxRetries: 0, // our loops own the retries
	})
	if err != nil {
		// NewClient still parses the VAULT_* variables (to ignore them
		// here) and fails on a malformed one.
		return nil, fmt.Errorf("vault client (the relay ignores VAULT_* environment variables, but a malformed one still stops the Vault library): %w", err)
	}
	// NewClient also takes VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS
	// from the environment: only the vault block and its auth method
	// decide these.
	c.ClearToken()
	c.SetHeaders(http.Header{vault.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	return c, nil
}

// vaultTLS verifies Vault's certificate against ca_file (else the system
// roots) and tls_server_name (else the address's host name).
func vaultTLS(cfg *config.Vault) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CAFile == "" {
		return t, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("vault ca_file: %w", err)
	}
	t.RootCAs = x509.NewCertPool()
	if !t.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("vault ca_file %s holds no PEM certificate", cfg.CAFile)
	}
	return t, nil
}

// SetValueHook makes the client report its credentials — its Vault token
// after each login, a secret ID it unwrapped — to fn (the log redactor),
// at once for those it holds. It replaces an earlier hook: the client
// outlives the reloads that each set one.
func (v *Vault) SetValueHook(fn func(key, value string)) {
	v.mu.Lock()
	v.valueHook = fn
	held := map[string]string{"vault:secret_id": v.secretID}
	if v.loginSecret != nil && v.loginSecret.Auth != nil {
		held["vault:token"] = v.loginSecret.Auth.ClientToken
	}
	maps.Copy(held, v.held)
	v.mu.Unlock()
	for key, value := range held {
		v.report(key, value)
	}
}

// holdValue keeps a value read through this client under key (nothing
// when value is empty) and reports it to the value hook now and to every
// later one.
func (v *Vault) holdValue(key, value string) {
	v.mu.Lock()
	if v.held == nil {
		v.held = map[string]string{}
	}
	if value == "" {
		delete(v.held, key)
	} else {
		v.held[key] = value
	}
	v.mu.Unlock()
	v.report(key, value)
}

// subscribeLogins returns a channel that receives after every later
// login (a buffer of one keeps a notice until it is read), and the
// function that ends the subscription.
func (v *Vault) subscribeLogins() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	v.mu.Lock()
	if v.loginSubs == nil {
		v.loginSubs = map[chan struct{}]bool{}
	}
	v.loginSubs[ch] = true
	v.mu.Unlock()
	return ch, func() {
		v.mu.Lock()
		delete(v.loginSubs, ch)
		v.mu.Unlock()
	}
}

func (v *Vault) report(key, value string) {
	v.mu.Lock()
	fn := v.valueHook
	v.mu.Unlock()
	if fn != nil && value != "" {
		fn(key, value)
	}
}

// Login authenticates with the configured method.
func (v *Vault) Login(ctx context.Context) error {
	secret, err := v.login(ctx)
	if err != nil {
		v.metrics.logins.WithLabelValues("failure").Inc()
		v.noteDown(err)
		return fmt.Errorf("vault login (%s): %w", v.cfg.Auth.Method, err)
	}
	v.metrics.logins.WithLabelValues("success").Inc()
	v.noteUp()
	if secret.Auth != nil {
		v.report("vault:token", secret.Auth.ClientToken)
	}
	v.mu.Lock()
	v.loginSecret = secret
	v.logins++
	v.setExpiryLocked(secret)
	for ch := range v.loginSubs {
		select {
		case ch <- struct{}{}:
		default: // a notice is pending already
		}
	}
	v.mu.Unlock()
	ttl, _ := secret.TokenTTL()
	v.log.Info("logged in to Vault", "method", v.cfg.Auth.Method, "ttl", ttl, "renewable", isRenewable(secret))
	return nil
}

func isRenewable(s *vault.Secret) bool {
	r, _ := s.TokenIsRenewable()
	return r
}

func (v *Vault) setExpiryLocked(s *vault.Secret) {
	ttl, err := s.TokenTTL()
	if err != nil || ttl <= 0 {
		v.tokenExpiry = time.Time{}
		v.metrics.tokenTTL.Set(0)
		return
	}
	v.tokenExpiry = time.Now().Add(ttl)
	v.metrics.tokenTTL.Set(ttl.Seconds())
}

func (v *Vault) login(ctx context.Context) (*vault.Secret, error) {
	a := v.cfg.Auth
	switch a.Method {
	case "token":
		tok, err := v.resolve(a.Token)
		if err != nil {
			return nil, err
		}
		v.client.SetToken(tok)
		s, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			v.client.ClearToken()
			return nil, cleanError(err)
		}
		// lookup-self reports the token in Data; give it the Auth shape the
		// LifetimeWatcher and TokenTTL expect.
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		s.Auth = &vault.SecretAuth{ClientToken: tok, LeaseDuration: int(ttl.Seconds()), Renewable: renewable}
		return s, nil
	case "approle":
		return v.loginAppRole(ctx)
	case "kubernetes":
		auth, err := kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithServiceAccountTokenPath(a.ServiceAccountTokenPath), kubernetes.WithMountPath(a.MountPath))
		if err != nil {
			return nil, err
		}
		s, err := v.client.Auth().Login(ctx, auth)
		return s, cleanError(err)
	case "aws":
		return v.loginAWS(ctx)
	}
	return nil, fmt.Errorf("unknown auth method %q", a.Method)
}

func (v *Vault) loginAppRole(ctx context.Context) (*vault.Secret, error) {
	a := v.cfg.Auth
	roleID, err := v.resolve(a.RoleID)
	if err != nil {
		return nil, err
	}
	secretID, err := v.resolve(a.SecretID)
	if err != nil {
		return nil, err
	}
	if a.SecretIDWrapped {
		if secretID, err = v.unwrapSecretID(ctx, secretID); err != nil {
			return nil, err
		}
	}
	auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(a.MountPath))
	if err != nil {
		return nil, err
	}
	s, err := v.client.Auth().Login(ctx, auth)
	if a.SecretIDWrapped && isRefusal(err) {
		return nil, fmt.Errorf("%w (the secret ID unwrapped from %s was refused: if it expired, deliver a fresh response-wrapped secret ID there; the next login attempt unwraps it)", cleanError(err), refPlace(a.SecretID))
	}
	return s, cleanError(err)
}

// unwrapSecretID returns the secret ID a response-wrapping token holds.
// Vault lets a wrapping token be unwrapped once, so the secret ID is
// unwrapped at the first login and reused by the logins that follow
// (after the Vault token's max TTL); only a new wrapping token, a fresh
// delivery, is unwrapped again.
func (v *Vault) unwrapSecretID(ctx context.Context, wrapping string) (string, error) {
	v.mu.Lock()
	if wrapping == v.unwrappedFrom && v.secretID != "" {
		id := v.secretID
		v.mu.Unlock()
		return id, nil
	}
	v.mu.Unlock()
	// A client of its own: unwrapping authenticates with the wrapping
	// token, and the main client keeps its token for the reads meanwhile.
	c, err := newClient(v.cfg)
	if err != nil {
		return "", err
	}
	s, err := c.Logical().UnwrapWithContext(ctx, wrapping)
	if err != nil {
		return "", v.unwrapError(err)
	}
	var id string
	if s != nil {
		id, _ = s.Data["secret_id"].(string)
	}
	if id == "" {
		return "", fmt.Errorf("%s: the response-wrapped token does not hold a secret_id", refPlace(v.cfg.Auth.SecretID))
	}
	v.mu.Lock()
	v.unwrappedFrom, v.secretID = wrapping, id
	v.mu.Unlock()
	v.report("vault:secret_id", id)
	v.log.Info("unwrapped the response-wrapped AppRole secret ID; it is kept in memory for later logins", "reference", v.cfg.Auth.SecretID.String())
	return id, nil
}

// isRefusal reports whether err is Vault refusing a request (4xx), not
// Vault being unreachable or failing.
func isRefusal(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500
}

// unwrapError says what to do when a wrapping token is refused: it was
// used already (by an earlier start of the relay, or by someone else) or
// its wrap TTL ran out. Either way only a fresh one helps.
func (v *Vault) unwrapError(err error) error {
	a := v.cfg.Auth
	if !isRefusal(err) {
		return fmt.Errorf("unwrapping the secret ID: %w", cleanError(err))
	}
	return fmt.Errorf("%s: the response-wrapped secret ID cannot be unwrapped (%v). A wrapping token works once and only until its wrap TTL ends; the relay unwraps it at start-up and keeps the secret ID in memory, so every start needs a fresh one. Deliver one: `vault write -wrap-ttl=10m -f auth/%s/role/<role>/secret-id`, and store the wrapping_token it prints where secret_id points. If no earlier start of this relay unwrapped it, someone else did: revoke that secret ID",
		refPlace(a.SecretID), cleanError(err), a.MountPath)
}

// loginAWS logs in with the IAM method: a GetCallerIdentity request
// signed with the instance's AWS credentials (from the usual chain:
// environment, instance profile…), which Vault forwards to STS.
func (v *Vault) loginAWS(ctx context.Context) (*vault.Secret, error) {
	a := v.cfg.Auth
	opts := []awsauth.LoginOption{awsauth.WithIAMAuth(), awsauth.WithRole(a.Role), awsauth.WithMountPath(a.MountPath)}
	if a.Region != "" {
		opts = append(opts, awsauth.WithRegion(a.Region))
	}
	if a.HeaderValue != "" {
		opts = append(opts, awsauth.WithIAMServerIDHeader(a.HeaderValue))
	}
	auth, err := awsauth.NewAWSAuth(opts...)
	if err != nil {
		return nil, err
	}
	s, err := v.client.Auth().Login(ctx, auth)
	return s, cleanError(err)
}

// cleanError keeps Vault's reply but drops nothing secret: Vault errors
// carry the URL, status and server messages, never request bodies.
func cleanError(err error) error {
	if err == nil {
		return nil
	}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d from Vault: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err
}

// Stats reports logins and renewals so far.
func (v *Vault) Stats() (logins, renewals int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logins, v.renewals
}

// KeepAlive renews the token until renewal ends (max TTL, revocation), then
// logs in again with backoff, until ctx ends. Run it in its own goroutine.
func (v *Vault) KeepAlive(ctx context.Context) {
	for ctx.Err() == nil {
		v.mu.Lock()
		secret := v.loginSecret
		v.mu.Unlock()
		if secret != nil {
			v.watch(ctx, secret)
		}
		if ctx.Err() != nil {
			return
		}
		v.reloginWithBackoff(ctx)
	}
}

// watch returns when the token needs a new login.
func (v *Vault) watch(ctx context.Context, secret *vault.Secret) {
	if !isRenewable(secret) {
		ttl, _ := secret.TokenTTL()
		if ttl <= 0 {
			<-ctx.Done() // a token without TTL never needs a new login
			return
		}
		// Log in again shortly before a non-renewable token expires.
		t := time.NewTimer(ttl * 9 / 10)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return
	}
	w, err := v.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		v.log.Error("cannot watch the Vault token", "error", err)
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case err := <-w.DoneCh():
			if err != nil {
				v.log.Warn("Vault token renewal failed; logging in again", "error", cleanError(err))
			} else {
				v.log.Info("Vault token reached its maximum TTL; logging in again")
			}
			return
		case r := <-w.RenewCh():
			v.mu.Lock()
			v.renewals++
			if r.Secret != nil && r.Secret.Auth != nil {
				v.setExpiryLocked(r.Secret)
			}
			v.mu.Unlock()
			v.metrics.renewals.Inc()
			v.noteUp()
			v.log.Debug("Vault token renewed")
		case <-ctx.Done():
			return
		}
	}
}

func (v *Vault) reloginWithBackoff(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		err := v.Login(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		v.log.Error("Vault login failed; relaying continues with the secrets already loaded", "error", err, "retry_in", delay)
		if !sleep(ctx, jitter(delay)) {
			return
		}
		delay = min(delay*2, time.Minute)
	}
}

// jitter spreads d by ±10% so that many relays do not poll in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// kvSecret is one read of a KV v2 secret.
type kvSecret struct {
	fields  map[string]string
	version int
}

// read reads every string field of a KV v2 secret and its version.
func (v *Vault) read(ctx context.Context, mount, path string) (kvSecret, error) {
	s, err := v.client.KVv2(mount).Get(ctx, path)
	if err != nil {
		v.noteFailure(err)
		if errors.Is(err, vault.ErrSecretNotFound) {
			return kvSecret{}, fmt.Errorf("vault://%s/%s: %w", mount, path, ErrNotFound)
		}
		return kvSecret{}, fmt.Errorf("vault://%s/%s: %w", mount, path, cleanError(err))
	}
	v.noteUp()
	out := kvSecret{fields: map[string]string{}}
	if s.VersionMetadata != nil {
		out.version = s.VersionMetadata.Version
	}
	for k, val := range s.Data {
		if str, ok := val.(string); ok {
			out.fields[k] = str
		}
	}
	return out, nil
}

// currentVersion reads a KV v2 secret's metadata.
func (v *Vault) currentVersion(ctx context.Context, mount, path string) (int, error) {
	m, err := v.client.KVv2(mount).GetMetadata(ctx, path)
	if err != nil {
		v.noteFailure(err)
		return 0, fmt.Errorf("vault://%s/%s metadata: %w", mount, path, cleanError(err))
	}
	v.noteUp()
	return m.CurrentVersion, nil
}

// write stores fields as a new version with check-and-set on cas.
func (v *Vault) write(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	data := make(map[string]any, len(fields))
	for k, val := range fields {
		data[k] = val
	}
	s, err := v.client.KVv2(mount).Put(ctx, path, data, vault.WithCheckAndSet(cas))
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			return 0, ErrCASConflict
		}
		v.noteFailure(err)
		return 0, fmt.Errorf("vault://%s/%s write: %w", mount, path, cleanError(err))
	}
	v.noteUp()
	if s.VersionMetadata == nil {
		return cas + 1, nil
	}
	return s.VersionMetadata.Version, nil
}

// noteFailure marks Vault as down unless the error is Vault answering
// about one secret (not found, forbidden): then Vault itself is up.
func (v *Vault) noteFailure(err error) {
	var re *vault.ResponseError
	if errors.Is(err, vault.ErrSecretNotFound) || errors.As(err, &re) && re.StatusCode < 500 {
		return
	}
	v.noteDown(err)
}
