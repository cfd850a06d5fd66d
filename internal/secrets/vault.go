package secrets

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
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
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client configuration: %w", vc.Error)
	}
	vc.Address = cfg.Address
	vc.MaxRetries = 0 // our loops own the retries
	vc.Timeout = 15 * time.Second
	if cfg.CAFile != "" || cfg.TLSServerName != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CAFile, TLSServerName: cfg.TLSServerName}); err != nil {
			return nil, fmt.Errorf("vault TLS: %w", err)
		}
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// NewClient picks up VAULT_TOKEN from the environment; only the
	// configured auth method may provide the token.
	c.ClearToken()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Vault{cfg: cfg, client: c, log: log, resolve: resolve, metrics: m}, nil
}

// Login authenticates with the configured method.
func (v *Vault) Login(ctx context.Context) error {
	secret, err := v.login(ctx)
	if err != nil {
		v.metrics.logins.WithLabelValues("failure").Inc()
		v.metrics.up.Set(0)
		return fmt.Errorf("vault login (%s): %w", v.cfg.Auth.Method, err)
	}
	v.metrics.logins.WithLabelValues("success").Inc()
	v.metrics.up.Set(1)
	v.mu.Lock()
	v.loginSecret = secret
	v.logins++
	v.setExpiryLocked(secret)
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
		roleID, err := v.resolve(a.RoleID)
		if err != nil {
			return nil, err
		}
		secretID, err := v.resolve(a.SecretID)
		if err != nil {
			return nil, err
		}
		opts := []approle.LoginOption{approle.WithMountPath(a.MountPath)}
		if a.SecretIDWrapped {
			opts = append(opts, approle.WithWrappingToken())
		}
		auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, opts...)
		if err != nil {
			return nil, err
		}
		s, err := v.client.Auth().Login(ctx, auth)
		return s, cleanError(err)
	case "kubernetes":
		auth, err := kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithServiceAccountTokenPath(a.ServiceAccountTokenPath), kubernetes.WithMountPath(a.MountPath))
		if err != nil {
			return nil, err
		}
		s, err := v.client.Auth().Login(ctx, auth)
		return s, cleanError(err)
	}
	return nil, fmt.Errorf("unknown auth method %q", a.Method)
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
			v.metrics.up.Set(1)
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
	v.metrics.up.Set(1)
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
	v.metrics.up.Set(1)
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
	v.metrics.up.Set(1)
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
	v.metrics.up.Set(0)
}
