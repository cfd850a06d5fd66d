package devsandbox

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Grant types of RFC 6749 and RFC 7523.
const (
	grantRefresh   = "refresh_token"
	grantClientCrd = "client_credentials"
	grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// AppOnly is the user of tokens issued by the client_credentials flow: they
// may authenticate as any mailbox, as Microsoft's app-only tokens do for
// mailboxes the application was granted.
const AppOnly = "*"

// TokenServer is a real OAuth2 token endpoint over HTTPS that behaves like
// Google's and Microsoft's: refresh tokens (optionally rotated on every
// use), client credentials, and service-account JWT assertions (RFC 7523),
// with expiring access tokens and the RFC 6749 §5.2 error format.
type TokenServer struct {
	// URL is the token endpoint.
	URL string

	srv *http.Server
	mux *http.ServeMux // the Graph and Gmail API handlers join it (sandbox.go)
	ln  net.Listener
	now func() time.Time

	mu              sync.Mutex
	clients         map[string]string // client_id -> secret ("" = public client)
	refresh         map[string]refreshGrant
	revoked         map[string]refreshGrant // revoked or rotated out, to attribute requests
	access          map[string]AccessGrant
	serviceAccounts map[string]*rsa.PublicKey      // client_email -> key
	clientCerts     map[string][]*x509.Certificate // client_id -> certificate credentials
	assertionJTIs   map[string]time.Time           // client assertion IDs seen -> their expiry
	ttl             time.Duration
	rotate          bool
	requests        map[string]int // per subject (user, or client_id for app-only)
	grantsByCred    map[string]int // successful grants per refresh token or client secret used
	total           int
	faults          []int // HTTP statuses to answer next, in order
	delay           time.Duration
	codes           map[string]*authCode
	devices         map[string]*deviceCode
	browserUser     string
}

type refreshGrant struct{ clientID, user, scope string }

// AccessGrant is what an issued access token stands for.
type AccessGrant struct {
	ClientID string
	User     string // a mailbox, or AppOnly
	Scope    string
	Expiry   time.Time
}

func newTokenServer(ca *CA) (*TokenServer, error) {
	cert, err := ca.Issue("127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	ts := &TokenServer{
		URL:             "https://" + ln.Addr().String() + "/token",
		ln:              ln,
		now:             time.Now,
		clients:         map[string]string{},
		refresh:         map[string]refreshGrant{},
		revoked:         map[string]refreshGrant{},
		access:          map[string]AccessGrant{},
		serviceAccounts: map[string]*rsa.PublicKey{},
		clientCerts:     map[string][]*x509.Certificate{},
		assertionJTIs:   map[string]time.Time{},
		ttl:             time.Hour,
		requests:        map[string]int{},
		grantsByCred:    map[string]int{},
		codes:           map[string]*authCode{},
		devices:         map[string]*deviceCode{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", ts.handleToken)
	mux.HandleFunc("GET /authorize", ts.handleAuthorize)
	mux.HandleFunc("POST /devicecode", ts.handleDeviceCode)
	ts.mux = mux
	ts.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nullLog()}
	go ts.srv.Serve(ln)
	return ts, nil
}

func (ts *TokenServer) close() { ts.srv.Close() }

// AddClient registers an OAuth client; an empty secret makes it public.
func (ts *TokenServer) AddClient(id, secret string) {
	ts.mu.Lock()
	ts.clients[id] = secret
	ts.mu.Unlock()
}

// IssueRefreshToken creates a refresh token of clientID for user, granting
// the scopes (a refresh that names no scope gets all of them, RFC 6749 §6).
func (ts *TokenServer) IssueRefreshToken(clientID, user string, scopes ...string) string {
	rt := "rt-" + randomHex(24)
	ts.mu.Lock()
	ts.refresh[rt] = refreshGrant{clientID: clientID, user: strings.ToLower(user), scope: strings.Join(scopes, " ")}
	ts.mu.Unlock()
	return rt
}

// RevokeRefreshToken makes rt answer invalid_grant from now on.
func (ts *TokenServer) RevokeRefreshToken(rt string) {
	ts.mu.Lock()
	if g, ok := ts.refresh[rt]; ok {
		ts.revoked[rt] = g
		delete(ts.refresh, rt)
	}
	ts.mu.Unlock()
}

// RefreshTokenValid reports whether rt is currently accepted.
func (ts *TokenServer) RefreshTokenValid(rt string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	_, ok := ts.refresh[rt]
	return ok
}

// SetAccessTokenTTL sets the lifetime of access tokens issued from now on.
func (ts *TokenServer) SetAccessTokenTTL(d time.Duration) {
	ts.mu.Lock()
	ts.ttl = d
	ts.mu.Unlock()
}

// SetRotateRefreshTokens makes every refresh return a new refresh token and
// invalidate the old one, as Microsoft's endpoint does.
func (ts *TokenServer) SetRotateRefreshTokens(on bool) {
	ts.mu.Lock()
	ts.rotate = on
	ts.mu.Unlock()
}

// FailNext makes the next n requests answer the given HTTP status (5xx to
// test retries).
func (ts *TokenServer) FailNext(n, status int) {
	ts.mu.Lock()
	for i := 0; i < n; i++ {
		ts.faults = append(ts.faults, status)
	}
	ts.mu.Unlock()
}

// SetDelay delays every answer, to widen races in tests.
func (ts *TokenServer) SetDelay(d time.Duration) {
	ts.mu.Lock()
	ts.delay = d
	ts.mu.Unlock()
}

// SetClockOffset shifts the endpoint's clock, to test a relay host whose
// clock is wrong (signed assertions then look expired).
func (ts *TokenServer) SetClockOffset(d time.Duration) {
	ts.mu.Lock()
	ts.now = func() time.Time { return time.Now().Add(d) }
	ts.mu.Unlock()
}

// RevokeAccessTokens forgets every issued access token, so the upstream
// rejects them although they have not expired.
func (ts *TokenServer) RevokeAccessTokens() {
	ts.mu.Lock()
	ts.access = map[string]AccessGrant{}
	ts.mu.Unlock()
}

// Requests returns how many token requests were made for a subject (a user,
// or the client_id of client_credentials requests), including failed ones.
func (ts *TokenServer) Requests(subject string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests[strings.ToLower(subject)]
}

// GrantsWith returns how many tokens were issued for requests that used
// cred as their refresh token or client secret, or a client assertion
// signed with the certificate whose CertificateThumbprint is cred.
func (ts *TokenServer) GrantsWith(cred string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.grantsByCred[cred]
}

// TotalRequests returns the number of token requests received.
func (ts *TokenServer) TotalRequests() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.total
}

// Lookup returns the grant of an access token, if it was issued and has not
// expired.
func (ts *TokenServer) Lookup(token string) (AccessGrant, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	g, ok := ts.access[token]
	if !ok || !ts.now().Before(g.Expiry) {
		return AccessGrant{}, false
	}
	return g, true
}

// IssuedAccessTokens returns every access token issued so far, for tests
// that check no token leaks into logs.
func (ts *TokenServer) IssuedAccessTokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]string, 0, len(ts.access))
	for at := range ts.access {
		out = append(out, at)
	}
	return out
}

// AddServiceAccount creates a service account and returns its JSON key in
// Google's format, with token_uri pointing at this endpoint.
func (ts *TokenServer) AddServiceAccount(email string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	ts.serviceAccounts[email] = &key.PublicKey
	ts.mu.Unlock()
	return json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     "oauthrelay-sandbox",
		"private_key_id": randomHex(8),
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      randomHex(10),
		"token_uri":      ts.URL,
	}, "", "  ")
}

type tokenError struct {
	status      int
	code, descr string
}

func (ts *TokenServer) handleToken(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	delay := ts.delay
	ts.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{400, "invalid_request", "malformed form body"})
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.total++
	if len(ts.faults) > 0 {
		status := ts.faults[0]
		ts.faults = ts.faults[1:]
		ts.count(r)
		writeTokenError(w, tokenError{status, "temporarily_unavailable", "injected fault"})
		return
	}
	grant, terr := ts.grant(r)
	if terr != nil {
		writeTokenError(w, *terr)
		return
	}
	ts.grantsByCred[r.PostForm.Get("refresh_token")]++
	if _, secret := clientCredentials(r); secret != "" {
		ts.grantsByCred[secret]++
	}
	if thumb := assertionThumbprint(r.PostForm.Get("client_assertion")); thumb != "" {
		ts.grantsByCred[thumb]++
	}
	at := "at-" + randomHex(24)
	grant.Expiry = ts.now().Add(ts.ttl)
	ts.access[at] = grant
	resp := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   int(ts.ttl / time.Second),
		"scope":        grant.Scope,
	}
	if gt := r.PostForm.Get("grant_type"); gt == "authorization_code" || gt == grantDeviceCode {
		rt := "rt-" + randomHex(24)
		ts.refresh[rt] = refreshGrant{clientID: grant.ClientID, user: grant.User, scope: grant.Scope}
		resp["refresh_token"] = rt
	}
	if r.PostForm.Get("grant_type") == grantRefresh {
		if ts.rotate {
			old := r.PostForm.Get("refresh_token")
			rt := "rt-" + randomHex(24)
			ts.refresh[rt] = ts.refresh[old]
			ts.revoked[old] = ts.refresh[old]
			delete(ts.refresh, old)
			resp["refresh_token"] = rt
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// count attributes a request to its subject; called with mu held.
func (ts *TokenServer) count(r *http.Request) {
	switch r.PostForm.Get("grant_type") {
	case grantRefresh:
		rt := r.PostForm.Get("refresh_token")
		if g, ok := ts.refresh[rt]; ok {
			ts.requests[g.user]++
		} else if g, ok := ts.revoked[rt]; ok {
			ts.requests[g.user]++
		}
	case grantClientCrd:
		ts.requests[strings.ToLower(requestClientID(r))]++
	case grantJWTBearer:
		if claims, err := decodeJWTClaims(r.PostForm.Get("assertion")); err == nil {
			ts.requests[strings.ToLower(claims.Sub)]++
		}
	}
}

// grant checks a token request; called with mu held.
func (ts *TokenServer) grant(r *http.Request) (AccessGrant, *tokenError) {
	ts.count(r)
	if g, terr, handled := ts.grantCodeOrDevice(r); handled {
		return g, terr
	}
	form := r.PostForm
	scope := form.Get("scope")
	switch form.Get("grant_type") {
	case grantRefresh:
		id, terr := ts.authenticateClient(r, false)
		if terr != nil {
			return AccessGrant{}, terr
		}
		g, ok := ts.refresh[form.Get("refresh_token")]
		if !ok || g.clientID != id {
			return AccessGrant{}, &tokenError{400, "invalid_grant", "The refresh token is invalid, expired or revoked."}
		}
		if scope == "" {
			scope = g.scope
		}
		return AccessGrant{ClientID: id, User: g.user, Scope: scope}, nil
	case grantClientCrd:
		id, terr := ts.authenticateClient(r, true)
		if terr != nil {
			return AccessGrant{}, terr
		}
		return AccessGrant{ClientID: id, User: AppOnly, Scope: scope}, nil
	case grantJWTBearer:
		claims, err := ts.verifyAssertion(form.Get("assertion"))
		if err != nil {
			return AccessGrant{}, &tokenError{400, "invalid_grant", err.Error()}
		}
		return AccessGrant{ClientID: claims.Iss, User: strings.ToLower(claims.Sub), Scope: claims.Scope}, nil
	}
	return AccessGrant{}, &tokenError{400, "unsupported_grant_type", "grant_type is not supported"}
}

func (ts *TokenServer) checkClient(id, secret string, needSecret bool) *tokenError {
	want, ok := ts.clients[id]
	if !ok || (want != "" || needSecret) && secret != want {
		return &tokenError{401, "invalid_client", "Client authentication failed."}
	}
	return nil
}

// clientCredentials reads client authentication from the body or from HTTP
// Basic (RFC 6749 §2.3.1).
func clientCredentials(r *http.Request) (string, string) {
	if id, secret, ok := r.BasicAuth(); ok {
		return id, secret
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
}

type jwtClaims struct {
	Iss   string `json:"iss"`
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
	Scope string `json:"scope"`
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
}

func decodeJWTClaims(assertion string) (jwtClaims, error) {
	var c jwtClaims
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return c, errors.New("assertion is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, errors.New("assertion payload is not base64url")
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, errors.New("assertion payload is not JSON")
	}
	return c, nil
}

// verifyAssertion checks an RS256 JWT signed by a registered service
// account, for this endpoint, unexpired, impersonating a subject.
func (ts *TokenServer) verifyAssertion(assertion string) (jwtClaims, error) {
	claims, err := decodeJWTClaims(assertion)
	if err != nil {
		return claims, err
	}
	key, ok := ts.serviceAccounts[claims.Iss]
	if !ok {
		return claims, fmt.Errorf("unknown service account %q", claims.Iss)
	}
	parts := strings.Split(assertion, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return claims, errors.New("bad signature encoding")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return claims, errors.New("Invalid JWT Signature.")
	}
	if claims.Aud != ts.URL {
		return claims, fmt.Errorf("Invalid JWT: audience %q is not this endpoint", claims.Aud)
	}
	if ts.now().Unix() > claims.Exp {
		return claims, errors.New("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.")
	}
	if claims.Sub == "" {
		return claims, errors.New("Invalid JWT: no subject to impersonate (domain-wide delegation needs sub)")
	}
	return claims, nil
}

func writeTokenError(w http.ResponseWriter, e tokenError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.code, "error_description": e.descr})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
