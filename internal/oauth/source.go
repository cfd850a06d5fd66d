// Package oauth obtains and caches OAuth2 access tokens for upstream
// mailboxes. It is the only package that holds access tokens.
//
// One Source serves one credential: an account for the refresh_token and
// service_account flows, a whole group for client_credentials (an app-only
// token is not tied to a mailbox). A Source reuses its token until shortly
// before expiry, lets concurrent callers share one refresh, adopts refresh
// tokens rotated by the provider, and remembers permanent failures for a
// while so a revoked grant does not make the relay hammer the endpoint.
package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"
	"golang.org/x/sync/singleflight"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
)

// Settings describe one credential.
type Settings struct {
	// Name identifies the credential in logs and errors (an account address
	// or "group:<name>").
	Name string
	// Group labels the credential's metrics.
	Group    string
	Metrics  *Metrics
	Flow     string // config.Flow*
	TokenURL string
	ClientID string
	Scopes   []string

	ClientSecret      secrets.Getter // optional for refresh_token
	RefreshToken      secrets.Getter // refresh_token flow
	ServiceAccountKey secrets.Getter // service_account flow: the JSON key
	// ClientCertificate and ClientPrivateKey (PEM), when set, authenticate
	// the client with a signed assertion instead of ClientSecret
	// (refresh_token and client_credentials flows).
	ClientCertificate, ClientPrivateKey secrets.Getter
	// Subject is the mailbox a service account impersonates.
	Subject string

	RefreshBeforeExpiry time.Duration
	ErrorBackoff        time.Duration
	HTTPClient          *http.Client
	// OnRotate is called with a refresh token that the provider issued in
	// place of the one sent (Microsoft rotates them), after the Source has
	// started using it.
	OnRotate func(newRefreshToken string)
	// OnToken is called with every new access token and its expiry (for
	// metrics and the log redaction safety net).
	OnToken func(accessToken string, expiry time.Time)
	// Recheck is called when the endpoint refuses the credentials for good
	// (invalid_grant, invalid_client); it re-reads them from their source
	// and reports whether they changed, in which case the request is tried
	// once more. A rotation that happened since the last poll is thus used
	// at once instead of failing messages until the next poll.
	Recheck func() bool
	Logger  hclog.Logger
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Status is a Source's state for health reporting.
type Status struct {
	HasToken    bool
	Expiry      time.Time
	LastRefresh time.Time
	// Failing is set from a failed refresh until the next successful one;
	// LastError describes the failure (never a secret).
	Failing     bool
	LastError   string
	FailingFrom time.Time
}

// Source is a cached, self-refreshing access token for one credential.
type Source struct {
	set Settings
	log hclog.Logger
	now func() time.Time
	sf  singleflight.Group

	mu          sync.Mutex
	tok         *oauth2.Token
	refreshAt   time.Time
	lastRefresh time.Time
	// failure is a remembered permanent error, valid until failUntil and
	// only while the credentials are those it was seen with (failFP).
	failure   *Error
	failUntil time.Time
	failFP    [32]byte
	failingAt time.Time
	lastErr   string
	// rtBase is the configured refresh token last seen; rotated is a newer
	// one the provider issued for it.
	rtBase, rotated string
	// saKeyRaw/saKey cache the parsed service account key.
	saKeyRaw string
	saKey    *serviceAccountKey
	// certFP/cert cache the parsed certificate credential, by a digest of
	// the PEM values it was parsed from.
	certFP [32]byte
	cert   *ClientCertificate
}

// NewSource returns a Source; it does not contact the endpoint until the
// first Token call.
func NewSource(s Settings) *Source {
	src := &Source{}
	src.Update(s)
	return src
}

// Update replaces the Source's settings — new secret getters and hooks
// after a reload — while keeping its cached token, rotated refresh token
// and remembered failure.
func (src *Source) Update(s Settings) {
	if s.RefreshBeforeExpiry <= 0 {
		s.RefreshBeforeExpiry = config.DefaultRefreshBeforeExpiry
	}
	if s.ErrorBackoff <= 0 {
		s.ErrorBackoff = config.DefaultTokenErrorBackoff
	}
	if s.HTTPClient == nil {
		s.HTTPClient = NewHTTPClient(HTTPOptions{})
	}
	if s.Metrics == nil {
		s.Metrics = NewMetrics(nil)
	}
	log := s.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	src.mu.Lock()
	src.set, src.log, src.now = s, log.With("credential", s.Name), now
	src.mu.Unlock()
}

// settings returns the current settings.
func (s *Source) settings() Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set
}

// Name returns the credential's name.
func (s *Source) Name() string { return s.settings().Name }

// Token returns a valid access token, refreshing it when it is missing or
// about to expire. Concurrent callers share one refresh. Errors are *Error.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := s.now()
	if s.tok != nil && now.Before(s.refreshAt) {
		at, m, group := s.tok.AccessToken, s.set.Metrics, s.set.Group
		s.mu.Unlock()
		m.hits.WithLabelValues(group).Inc()
		return at, nil
	}
	s.set.Metrics.misses.WithLabelValues(s.set.Group).Inc()
	if s.failure != nil && now.Before(s.failUntil) {
		if fp, err := s.fingerprintLocked(); err == nil && fp != s.failFP {
			s.log.Info("credentials changed since the last token failure; trying again")
			s.failure = nil
		} else if at, ok := s.stillUsableLocked(now); ok {
			s.mu.Unlock()
			return at, nil
		} else {
			e := *s.failure
			e.Remembered = true
			s.mu.Unlock()
			return "", &e
		}
	}
	s.mu.Unlock()

	ch := s.sf.DoChan("refresh", func() (any, error) { return s.refresh() })
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", &Error{Credential: s.Name(), Err: ctx.Err()}
	}
}

// Invalidate drops the cached token if it is the given one, so that the
// next Token call refreshes. The upstream calls it when the provider
// rejected the token (SMTP 535) although it had not expired.
func (s *Source) Invalidate(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken == accessToken {
		s.tok = nil
		s.log.Debug("access token rejected upstream; dropped from cache")
	}
}

// Reset forgets the cached token and any remembered failure; used when the
// credential's secrets were rotated.
func (s *Source) Reset() {
	s.mu.Lock()
	s.tok, s.failure = nil, nil
	s.failingAt, s.lastErr = time.Time{}, ""
	s.mu.Unlock()
}

// Status reports the Source's state.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{LastRefresh: s.lastRefresh, FailingFrom: s.failingAt, Failing: !s.failingAt.IsZero(), LastError: s.lastErr}
	if s.tok != nil {
		st.HasToken, st.Expiry = true, s.tok.Expiry
	}
	return st
}

// stillUsableLocked returns the cached token while it has not actually
// expired, so that a failed early refresh does not stop delivery.
func (s *Source) stillUsableLocked(now time.Time) (string, bool) {
	if s.tok == nil || s.tok.AccessToken == "" {
		return "", false
	}
	if !s.tok.Expiry.IsZero() && !now.Before(s.tok.Expiry.Add(-10*time.Second)) {
		return "", false
	}
	return s.tok.AccessToken, true
}

func (s *Source) refresh() (string, error) {
	s.mu.Lock()
	if s.tok != nil && s.now().Before(s.refreshAt) {
		at := s.tok.AccessToken
		s.mu.Unlock()
		return at, nil
	}
	set, log := s.set, s.log
	s.mu.Unlock()

	// The refresh is shared by every waiting caller, so it must not die
	// with the context of the caller that happened to start it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, set.HTTPClient)
	started := time.Now()
	tok, sentRT, err := s.fetch(ctx, set)
	if err != nil && set.Recheck != nil && classify(set.Name, err).Permanent && set.Recheck() {
		log.Info("credentials were refused, and their source has newer ones; retrying with those")
		tok, sentRT, err = s.fetch(ctx, set)
	}

	s.mu.Lock()
	now := s.now()
	if err != nil {
		e := classify(set.Name, err)
		set.Metrics.refreshes.WithLabelValues(set.Group, "failure").Inc()
		if s.failingAt.IsZero() {
			s.failingAt = now
		}
		s.lastErr = e.Error()
		if e.Permanent {
			s.failure, s.failUntil = e, now.Add(set.ErrorBackoff)
			s.failFP, _ = s.fingerprintLocked()
		}
		at, usable := s.stillUsableLocked(now)
		s.mu.Unlock()
		log.Error("token refresh failed", "error", e.Error(), "hint", e.Hint(), "permanent", e.Permanent, "remembered_for", durationIf(e.Permanent, set.ErrorBackoff))
		if usable {
			log.Warn("continuing with the current access token until it expires")
			return at, nil
		}
		return "", e
	}
	set.Metrics.refreshes.WithLabelValues(set.Group, "success").Inc()
	s.tok = tok
	s.refreshAt = refreshTime(now, tok.Expiry, set.RefreshBeforeExpiry)
	s.lastRefresh = now
	s.failure, s.failingAt, s.lastErr = nil, time.Time{}, ""
	rotated := ""
	if set.Flow == config.FlowRefreshToken && tok.RefreshToken != "" && tok.RefreshToken != sentRT {
		s.rotated = tok.RefreshToken
		rotated = tok.RefreshToken
	}
	s.mu.Unlock()
	log.Debug("access token refreshed", "expires_in", time.Until(tok.Expiry).Round(time.Second), "took", time.Since(started).Round(time.Millisecond))
	if set.OnToken != nil {
		set.OnToken(tok.AccessToken, tok.Expiry)
	}
	if rotated != "" {
		log.Info("provider rotated the refresh token; using the new one")
		if set.OnRotate != nil {
			set.OnRotate(rotated)
		}
	}
	return tok.AccessToken, nil
}

func durationIf(cond bool, d time.Duration) time.Duration {
	if cond {
		return d
	}
	return 0
}

// refreshTime is when a token expiring at expiry should be replaced: early
// by margin, but never later than half-way through a short-lived token's
// life, so that tokens living less than twice the margin are still reused.
func refreshTime(now, expiry time.Time, margin time.Duration) time.Time {
	if expiry.IsZero() {
		// No expires_in: reuse for an hour at most, or until rejected.
		return now.Add(time.Hour)
	}
	life := expiry.Sub(now)
	if margin > life/2 {
		margin = life / 2
	}
	return expiry.Add(-margin)
}

// fingerprintLocked hashes the credential's current secrets, so that a
// remembered failure can be forgotten as soon as an operator fixes them.
func (s *Source) fingerprintLocked() ([32]byte, error) {
	h := sha256.New()
	for _, g := range []secrets.Getter{s.set.RefreshToken, s.set.ClientSecret, s.set.ServiceAccountKey, s.set.ClientCertificate, s.set.ClientPrivateKey} {
		if g == nil {
			continue
		}
		v, err := g()
		if err != nil {
			return [32]byte{}, err
		}
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// currentRefreshToken returns the refresh token to send: the configured one,
// or the newer one the provider rotated it into, until the configured value
// itself changes (an operator or another instance rotated it).
func (s *Source) currentRefreshToken(set Settings) (string, error) {
	base, err := set.RefreshToken()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if base != s.rtBase {
		s.rtBase, s.rotated = base, ""
	}
	if s.rotated != "" {
		return s.rotated, nil
	}
	return base, nil
}

// fetch asks the token endpoint for a new token. It returns the refresh
// token it sent, to detect rotation.
func (s *Source) fetch(ctx context.Context, set Settings) (*oauth2.Token, string, error) {
	if set.ClientCertificate != nil {
		cred, err := s.clientCertificate(set)
		if err != nil {
			return nil, "", err
		}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, withClientAssertions(set.HTTPClient, set.TokenURL, set.ClientID, cred, s.now))
		tok, rt, err := s.fetchToken(ctx, set, "")
		if note, expired := cred.ExpiryNote(s.now(), 0); expired && err != nil {
			e := classify(set.Name, err)
			e.Description = strings.TrimPrefix(e.Description+"; "+note, "; ")
			return nil, rt, e
		}
		return tok, rt, err
	}
	secret := ""
	if set.ClientSecret != nil {
		v, err := set.ClientSecret()
		if err != nil {
			return nil, "", secretError("client_secret", err)
		}
		secret = v
	}
	return s.fetchToken(ctx, set, secret)
}

// fetchToken makes the flow's token request, authenticated with secret
// (if any) or by the HTTP client in ctx.
func (s *Source) fetchToken(ctx context.Context, set Settings, secret string) (*oauth2.Token, string, error) {
	switch set.Flow {
	case config.FlowRefreshToken:
		rt, err := s.currentRefreshToken(set)
		if err != nil {
			return nil, "", secretError("refresh_token", err)
		}
		cfg := &oauth2.Config{
			ClientID:     set.ClientID,
			ClientSecret: secret,
			Endpoint:     oauth2.Endpoint{TokenURL: set.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
			Scopes:       set.Scopes,
		}
		tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
		return tok, rt, err
	case config.FlowClientCredentials:
		cfg := &clientcredentials.Config{
			ClientID:     set.ClientID,
			ClientSecret: secret,
			TokenURL:     set.TokenURL,
			Scopes:       set.Scopes,
			AuthStyle:    oauth2.AuthStyleInParams,
		}
		tok, err := cfg.Token(ctx)
		return tok, "", err
	case config.FlowServiceAccount:
		key, err := s.serviceAccountKey(set)
		if err != nil {
			return nil, "", err
		}
		cfg := &jwt.Config{
			Email:        key.ClientEmail,
			PrivateKey:   []byte(key.PrivateKey),
			PrivateKeyID: key.PrivateKeyID,
			Subject:      set.Subject,
			Scopes:       set.Scopes,
			TokenURL:     set.TokenURL,
		}
		tok, err := cfg.TokenSource(ctx).Token()
		return tok, "", err
	}
	return nil, "", &Error{Credential: set.Name, Permanent: true, Code: "unsupported_flow", Description: set.Flow}
}

type serviceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
}

func (s *Source) serviceAccountKey(set Settings) (*serviceAccountKey, error) {
	raw, err := set.ServiceAccountKey()
	if err != nil {
		return nil, secretError("service_account_key", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saKey != nil && raw == s.saKeyRaw {
		return s.saKey, nil
	}
	var k serviceAccountKey
	if err := json.Unmarshal([]byte(raw), &k); err != nil {
		// The JSON error could quote part of the key; keep only its kind.
		return nil, &Error{Permanent: true, Code: "invalid_service_account_key", Description: "the service_account_key is not valid JSON"}
	}
	if k.ClientEmail == "" || k.PrivateKey == "" {
		return nil, &Error{Permanent: true, Code: "invalid_service_account_key", Description: "the service_account_key lacks client_email or private_key (download a JSON key for the service account)"}
	}
	s.saKeyRaw, s.saKey = raw, &k
	return &k, nil
}

// clientCertificate returns the parsed certificate credential, parsing it
// again only when its PEM values changed (a rotation). A certificate that
// expires soon or has expired is logged when it is parsed.
func (s *Source) clientCertificate(set Settings) (*ClientCertificate, error) {
	certPEM, err := set.ClientCertificate()
	if err != nil {
		return nil, secretError("client_certificate", err)
	}
	keyPEM, err := set.ClientPrivateKey()
	if err != nil {
		return nil, secretError("client_private_key", err)
	}
	fp := sha256.Sum256([]byte(certPEM + "\x00" + keyPEM))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert != nil && fp == s.certFP {
		return s.cert, nil
	}
	cred, err := ParseClientCertificate(certPEM, keyPEM)
	if err != nil {
		return nil, &Error{Permanent: true, Code: "invalid_client_certificate", Description: err.Error()}
	}
	s.cert, s.certFP = cred, fp
	fields := []any{"subject", cred.Certificate().Subject.String(), "not_after", cred.Certificate().NotAfter.UTC()}
	switch note, expired := cred.ExpiryNote(s.now(), CertificateWarnPeriod); {
	case expired:
		s.log.Error(note, fields...)
	case note != "":
		s.log.Warn(note, fields...)
	default:
		s.log.Debug("client certificate loaded", fields...)
	}
	return cred, nil
}

// CertificateWarnPeriod is how long before its expiry a client certificate
// is reported as expiring.
const CertificateWarnPeriod = 30 * 24 * time.Hour

// secretError wraps a failure to read a secret. Secret errors name the
// reference, never the value.
func secretError(what string, err error) *Error {
	return &Error{Code: "secret_unavailable", Description: what + " unavailable", Err: err}
}

// Error is a failure to obtain an access token. Its text never contains a
// secret or a token: response bodies are reduced to the OAuth2 error fields.
type Error struct {
	Credential  string
	Permanent   bool
	Code        string // RFC 6749 §5.2 error code, or our own
	Description string
	HTTPStatus  int
	// Remembered is set when the error was served from memory without a
	// request to the endpoint.
	Remembered bool
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("token")
	if e.Credential != "" {
		fmt.Fprintf(&b, " for %s", e.Credential)
	}
	b.WriteString(": ")
	switch {
	case e.Code != "":
		b.WriteString(e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, "token endpoint answered HTTP %d", e.HTTPStatus)
	}
	if e.Err != nil {
		if e.Code != "" || e.HTTPStatus != 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	}
	if e.Remembered {
		b.WriteString(" [remembered; not retried yet]")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Hint tells an operator what to do about the error.
func (e *Error) Hint() string {
	switch e.Code {
	case "invalid_grant":
		return "the refresh token was revoked, expired or issued to another client, or (service accounts) domain-wide delegation is missing: re-authorise the account and store the new refresh token"
	case "invalid_client", "unauthorized_client":
		if strings.Contains(e.Description, "AADSTS700024") {
			return "the token endpoint rejected the client assertion's time range: check this host's clock (NTP)"
		}
		if mentionsAny(e.Description, "client certificate", "client assertion", "AADSTS700027", "AADSTS700023", "AADSTS700021") {
			return "the client certificate was refused: check that it is uploaded to the application's registration (Certificates & secrets), unexpired, and stored with its own private key"
		}
		return "the client_id or client_secret is wrong or expired: check the app registration and rotate the client secret"
	case "invalid_client_certificate":
		return "store the PEM certificate uploaded to the application and its unencrypted RSA private key (at least 2048 bits) where client_certificate and client_private_key point"
	case "invalid_scope":
		return "the requested scopes are not granted to this client: check the provider's scopes"
	case "secret_unavailable":
		return "a secret referenced by the configuration cannot be read"
	case "invalid_service_account_key":
		return "download a new JSON key for the service account"
	}
	if e.HTTPStatus >= 500 || e.Err != nil {
		return "the token endpoint is unreachable or failing; delivery resumes when it answers"
	}
	return ""
}

func mentionsAny(s string, parts ...string) bool {
	for _, p := range parts {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// permanentCodes are OAuth2 errors that retrying with the same credentials
// cannot fix.
var permanentCodes = map[string]bool{
	"invalid_grant":          true,
	"invalid_client":         true,
	"unauthorized_client":    true,
	"unsupported_grant_type": true,
	"invalid_scope":          true,
	"invalid_request":        true,
}

func classify(name string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		c.Credential = name
		return &c
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		out := &Error{Credential: name, Code: re.ErrorCode, Description: re.ErrorDescription}
		if re.Response != nil {
			out.HTTPStatus = re.Response.StatusCode
		}
		if out.Code == "" {
			// jwt and some endpoints leave decoding to us.
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(re.Body, &body) == nil {
				out.Code, out.Description = body.Error, body.Description
			}
		}
		out.Description = truncate(out.Description, 300)
		out.Permanent = permanentCodes[out.Code] ||
			out.HTTPStatus >= 400 && out.HTTPStatus < 500 && out.HTTPStatus != http.StatusTooManyRequests && out.HTTPStatus != http.StatusRequestTimeout
		return out
	}
	// Transport errors (url.Error) name the endpoint URL and the cause,
	// which hold no secret.
	return &Error{Credential: name, Err: err}
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
