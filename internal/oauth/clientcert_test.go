package oauth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const entraApp = "entra-app" // a client that has certificates and no secret

// certFixture is a sandbox endpoint with a certificate-only client, and
// the certificate and key a Source reads (swappable, as after a rotation).
type certFixture struct {
	sb        *devsandbox.Sandbox
	app       *devsandbox.AppCertificate
	cert, key atomic.Value
	logs      *testutil.LogBuffer
}

func newCertFixture(t *testing.T, o devsandbox.AppCertificateOptions) *certFixture {
	t.Helper()
	f := &certFixture{sb: testutil.Sandbox(t, devsandbox.Options{}), logs: &testutil.LogBuffer{}}
	f.app = issueApp(t, f.sb, o)
	f.sb.Tokens.AddClientCertificate(entraApp, f.app.Certificate)
	f.use(f.app)
	t.Cleanup(func() {
		// Neither the key nor an assertion may reach the logs.
		testutil.AssertNoSecrets(t, "logs", f.logs.String(), []string{f.app.KeyPEM, keyBody(f.app.KeyPEM), "eyJhbGciOiJSUzI1NiI"})
	})
	return f
}

func issueApp(t *testing.T, sb *devsandbox.Sandbox, o devsandbox.AppCertificateOptions) *devsandbox.AppCertificate {
	t.Helper()
	app, err := sb.CA.IssueAppCertificate(o)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// use makes the Source's secrets hold app's certificate and key.
func (f *certFixture) use(app *devsandbox.AppCertificate) {
	f.cert.Store(app.CertPEM)
	f.key.Store(app.KeyPEM)
}

// keyBody is a distinctive slice of a PEM key's base64.
func keyBody(p string) string { return strings.Split(p, "\n")[2] }

func (f *certFixture) settings(t *testing.T, flow string) oauth.Settings {
	t.Helper()
	s := oauth.Settings{
		Name:              "group:entra",
		Flow:              flow,
		TokenURL:          f.sb.Tokens.URL,
		ClientID:          entraApp,
		Scopes:            []string{config.MicrosoftAppOnlyScope},
		ClientCertificate: func() (string, error) { return f.cert.Load().(string), nil },
		ClientPrivateKey:  func() (string, error) { return f.key.Load().(string), nil },
		HTTPClient:        oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: f.sb.CA.Pool, RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond}),
		Logger:            f.logs.Logger(t),
	}
	if flow == config.FlowRefreshToken {
		rt := f.sb.Tokens.IssueRefreshToken(entraApp, user, config.MicrosoftSMTPScope)
		s.Name, s.Scopes = user, []string{config.MicrosoftSMTPScope, "offline_access"}
		s.RefreshToken = func() (string, error) { return rt, nil }
	}
	return s
}

func TestClientCertificateFlows(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flow     string
		opts     devsandbox.AppCertificateOptions
		wantUser string
	}{
		{"client_credentials, PKCS#8 key", config.FlowClientCredentials, devsandbox.AppCertificateOptions{}, devsandbox.AppOnly},
		{"client_credentials, PKCS#1 key, chain", config.FlowClientCredentials, devsandbox.AppCertificateOptions{PKCS1: true, Chain: true}, devsandbox.AppOnly},
		{"refresh_token", config.FlowRefreshToken, devsandbox.AppCertificateOptions{}, user},
		{"refresh_token, 3072-bit key", config.FlowRefreshToken, devsandbox.AppCertificateOptions{Bits: 3072}, user},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCertFixture(t, tc.opts)
			src := oauth.NewSource(f.settings(t, tc.flow))
			thumb := devsandbox.CertificateThumbprint(f.app.Certificate)
			for i := 1; i <= 3; i++ {
				tok, err := src.Token(context.Background())
				if err != nil {
					t.Fatalf("token %d: %v", i, err)
				}
				g, ok := f.sb.Tokens.Lookup(tok)
				if !ok || g.ClientID != entraApp || g.User != tc.wantUser {
					t.Fatalf("token %d: grant = %+v, %v", i, g, ok)
				}
				// The sandbox refuses a replayed jti: each grant proves a
				// newly signed assertion.
				if got := f.sb.Tokens.GrantsWith(thumb); got != i {
					t.Fatalf("grants with the certificate = %d, want %d", got, i)
				}
				src.Invalidate(tok)
			}
		})
	}
}

func TestClientAssertionFormat(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	app := issueApp(t, sb, devsandbox.AppCertificateOptions{})
	cred, err := oauth.ParseClientCertificate(app.CertPEM, app.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	a1, err := cred.Assertion("app-id", "https://login.example/tenant/oauth2/v2.0/token", now)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := cred.Assertion("app-id", "https://login.example/tenant/oauth2/v2.0/token", now)
	parts := strings.Split(a1, ".")
	if len(parts) != 3 {
		t.Fatalf("assertion has %d parts", len(parts))
	}
	var header map[string]string
	var claims map[string]any
	decode(t, parts[0], &header)
	decode(t, parts[1], &claims)
	s256, s1 := sha256.Sum256(app.Certificate.Raw), sha1.Sum(app.Certificate.Raw)
	wantHeader := map[string]string{
		"alg": "RS256", "typ": "JWT",
		"x5t#S256": base64.RawURLEncoding.EncodeToString(s256[:]),
		"x5t":      base64.RawURLEncoding.EncodeToString(s1[:]),
	}
	for k, v := range wantHeader {
		if header[k] != v {
			t.Errorf("header %s = %q, want %q", k, header[k], v)
		}
	}
	for k, v := range map[string]any{
		"aud": "https://login.example/tenant/oauth2/v2.0/token", "iss": "app-id", "sub": "app-id",
		"nbf": float64(now.Unix()), "iat": float64(now.Unix()), "exp": float64(now.Add(10 * time.Minute).Unix()),
	} {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	var claims2 map[string]any
	decode(t, strings.Split(a2, ".")[1], &claims2)
	if jti, _ := claims["jti"].(string); len(jti) != 36 || jti == claims2["jti"] {
		t.Errorf("jti = %v then %v: want two different UUIDs", claims["jti"], claims2["jti"])
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(app.Certificate.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("signature does not verify with the certificate: %v", err)
	}
}

func decode(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestParseClientCertificate(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	app := issueApp(t, sb, devsandbox.AppCertificateOptions{})
	other := issueApp(t, sb, devsandbox.AppCertificateOptions{PKCS1: true})
	small := issueApp(t, sb, devsandbox.AppCertificateOptions{Bits: 1024})
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	encrypted := "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0=\n-----END ENCRYPTED PRIVATE KEY-----\n"
	for _, tc := range []struct {
		name, cert, key string
		want            string // in the error; "" for success
	}{
		{"PKCS#8", app.CertPEM, app.KeyPEM, ""},
		{"PKCS#1", other.CertPEM, other.KeyPEM, ""},
		{"key of another certificate", app.CertPEM, other.KeyPEM, "does not belong to the client certificate"},
		{"key and certificate swapped", app.KeyPEM, app.CertPEM, "holds no PEM CERTIFICATE block"},
		{"1024-bit key", small.CertPEM, small.KeyPEM, "has 1024 bits"},
		{"EC key", app.CertPEM, ecPEM, "not an RSA key"},
		{"encrypted key", app.CertPEM, encrypted, "is encrypted"},
		{"no key", app.CertPEM, "not a key", "holds no PEM"},
		{"garbage certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", app.KeyPEM, "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := oauth.ParseClientCertificate(tc.cert, tc.key)
			if tc.want == "" {
				if err != nil || !cred.Certificate().Equal(certOf(t, tc.cert)) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			for _, k := range []string{app.KeyPEM, other.KeyPEM, small.KeyPEM, ecPEM} {
				testutil.AssertNoSecrets(t, "the error", err.Error(), []string{keyBody(k)})
			}
		})
	}
}

func certOf(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientCertificateRefusedBySource(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(t *testing.T, f *certFixture)
		wantCode  string
		wantDescr []string
		wantHint  string
		requests  int // token requests made
	}{
		{
			name: "certificate not registered with the application",
			setup: func(t *testing.T, f *certFixture) {
				f.use(issueApp(t, f.sb, devsandbox.AppCertificateOptions{}))
			},
			wantCode: "invalid_client", wantDescr: []string{"AADSTS700027", "The key was not found"},
			wantHint: "client certificate was refused", requests: 1,
		},
		{
			name: "expired certificate",
			setup: func(t *testing.T, f *certFixture) {
				old := issueApp(t, f.sb, devsandbox.AppCertificateOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
				f.sb.Tokens.AddClientCertificate(entraApp, old.Certificate)
				f.use(old)
			},
			wantCode: "invalid_client", wantDescr: []string{"AADSTS700027", "The key used is expired", "the client certificate expired on"},
			wantHint: "client certificate was refused", requests: 1,
		},
		{
			name:     "host clock 20 minutes slow",
			setup:    func(t *testing.T, f *certFixture) { f.sb.Tokens.SetClockOffset(20 * time.Minute) },
			wantCode: "invalid_client", wantDescr: []string{"AADSTS700024", "not within its valid time range"},
			wantHint: "clock", requests: 1,
		},
		{
			name: "key of another certificate",
			setup: func(t *testing.T, f *certFixture) {
				f.key.Store(issueApp(t, f.sb, devsandbox.AppCertificateOptions{}).KeyPEM)
			},
			wantCode: "invalid_client_certificate", wantDescr: []string{"does not belong to the client certificate"},
			wantHint: "unencrypted RSA private key", requests: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCertFixture(t, devsandbox.AppCertificateOptions{})
			tc.setup(t, f)
			_, err := oauth.NewSource(f.settings(t, config.FlowClientCredentials)).Token(context.Background())
			var oe *oauth.Error
			if !errors.As(err, &oe) || oe.Code != tc.wantCode || !oe.Permanent {
				t.Fatalf("err = %v, want a permanent %s", err, tc.wantCode)
			}
			for _, d := range tc.wantDescr {
				if !strings.Contains(oe.Description, d) {
					t.Errorf("description %q lacks %q", oe.Description, d)
				}
			}
			if !strings.Contains(oe.Hint(), tc.wantHint) {
				t.Errorf("hint %q lacks %q", oe.Hint(), tc.wantHint)
			}
			if got := f.sb.Tokens.TotalRequests(); got != tc.requests {
				t.Errorf("token requests = %d, want %d", got, tc.requests)
			}
		})
	}
}

// TestClientCertificateRotation rotates the certificate in the secret
// store: a Reset (what the relay does on a rotation) uses the new one at
// once; a refusal of the old one re-reads the secrets once (Recheck).
func TestClientCertificateRotation(t *testing.T) {
	for _, how := range []string{"reset", "recheck"} {
		t.Run(how, func(t *testing.T) {
			f := newCertFixture(t, devsandbox.AppCertificateOptions{})
			old := f.app
			fresh := issueApp(t, f.sb, devsandbox.AppCertificateOptions{CommonName: "rotated"})
			s := f.settings(t, config.FlowClientCredentials)
			var rechecks atomic.Int32
			s.Recheck = func() bool {
				rechecks.Add(1)
				f.use(fresh) // the store finds the new version
				return true
			}
			src := oauth.NewSource(s)
			if _, err := src.Token(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The operator uploads the new certificate and removes the old.
			f.sb.Tokens.AddClientCertificate(entraApp, fresh.Certificate)
			f.sb.Tokens.RemoveClientCertificate(entraApp, old.Certificate)
			if how == "reset" {
				f.use(fresh)
				src.Reset()
			} else {
				f.sb.Tokens.RevokeAccessTokens()
				src.Reset() // as after a 535: the cached token is gone
			}
			if _, err := src.Token(context.Background()); err != nil {
				t.Fatalf("after the rotation: %v", err)
			}
			if got := f.sb.Tokens.GrantsWith(devsandbox.CertificateThumbprint(fresh.Certificate)); got != 1 {
				t.Errorf("grants with the new certificate = %d, want 1", got)
			}
			wantRechecks := map[string]int32{"reset": 0, "recheck": 1}[how]
			if got := rechecks.Load(); got != wantRechecks {
				t.Errorf("rechecks = %d, want %d", got, wantRechecks)
			}
		})
	}
}

// TestSandboxRefusesBadAssertions posts hand-made token requests: the
// sandbox must refuse what Entra refuses.
func TestSandboxRefusesBadAssertions(t *testing.T) {
	f := newCertFixture(t, devsandbox.AppCertificateOptions{})
	cred, err := oauth.ParseClientCertificate(f.app.CertPEM, f.app.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(f.sb)}}
	sign := func(clientID, aud string, now time.Time) string {
		a, err := cred.Assertion(clientID, aud, now)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	replayed := sign(entraApp, f.sb.Tokens.URL, time.Now())
	valid := sign(entraApp, f.sb.Tokens.URL, time.Now())
	parts := strings.Split(valid, ".")
	altered := strings.Split(sign(entraApp, f.sb.Tokens.URL, time.Now()), ".")[1]
	tampered := parts[0] + "." + altered + "." + parts[2] // valid claims, another assertion's
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		descr  string // "" for success
	}{
		{"valid", assertionForm(entraApp, replayed), 200, ""},
		{"replayed jti", assertionForm(entraApp, replayed), 401, "jti"},
		{"no credential", url.Values{"grant_type": {"client_credentials"}, "client_id": {entraApp}}, 401, "AADSTS7000218"},
		{"a client secret instead", url.Values{"grant_type": {"client_credentials"}, "client_id": {entraApp}, "client_secret": {"guess"}}, 401, "AADSTS7000215"},
		{"wrong audience", assertionForm(entraApp, sign(entraApp, "https://login.microsoftonline.com/x/oauth2/v2.0/token", time.Now())), 401, "AADSTS700023"},
		{"client_id is not the issuer", assertionForm("someone-else", sign(entraApp, f.sb.Tokens.URL, time.Now())), 401, "AADSTS700021"},
		{"expired assertion", assertionForm(entraApp, sign(entraApp, f.sb.Tokens.URL, time.Now().Add(-15*time.Minute))), 401, "AADSTS700024"},
		{"not yet valid", assertionForm(entraApp, sign(entraApp, f.sb.Tokens.URL, time.Now().Add(5*time.Minute))), 401, "AADSTS700024"},
		{"signature of other claims", assertionForm("", tampered), 401, "did not match"},
		{"signature does not match", assertionForm(entraApp, parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString([]byte("not a signature"))), 401, "did not match"},
		{"not a JWT", assertionForm(entraApp, "abc"), 401, "AADSTS50027"},
		{"wrong assertion type", func() url.Values {
			v := assertionForm(entraApp, valid)
			v.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return v
		}(), 400, "client_assertion_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.PostForm(f.sb.Tokens.URL, tc.form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var answer struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(body, &answer); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d (%s: %s), want %d", resp.StatusCode, answer.Error, answer.Description, tc.status)
			}
			if tc.descr == "" {
				if answer.AccessToken == "" {
					t.Error("no access token")
				}
				return
			}
			wantErr := "invalid_client"
			if tc.status == 400 {
				wantErr = "invalid_request"
			}
			if answer.Error != wantErr || !strings.Contains(answer.Description, tc.descr) {
				t.Errorf("answer = %s: %s; want %s mentioning %q", answer.Error, answer.Description, wantErr, tc.descr)
			}
		})
	}
}

func tlsConfig(sb *devsandbox.Sandbox) *tls.Config {
	return &tls.Config{RootCAs: sb.CA.Pool, MinVersion: tls.VersionTLS12}
}

func assertionForm(clientID, assertion string) url.Values {
	v := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {config.MicrosoftAppOnlyScope},
		"client_assertion_type": {oauth.ClientAssertionType},
		"client_assertion":      {assertion},
	}
	if clientID != "" {
		v.Set("client_id", clientID)
	}
	return v
}

// TestAuthorizationWithClientCertificate obtains a refresh token through
// the device code flow and the browser flow with a certificate-only
// client: the device flow polls, each poll with a new assertion.
func TestAuthorizationWithClientCertificate(t *testing.T) {
	for _, method := range []string{"device", "browser"} {
		t.Run(method, func(t *testing.T) {
			f := newCertFixture(t, devsandbox.AppCertificateOptions{})
			cred, err := oauth.ParseClientCertificate(f.app.CertPEM, f.app.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			a := oauth.Authorization{
				ClientID: entraApp, ClientCertificate: cred,
				AuthURL: f.sb.Tokens.AuthURL(), TokenURL: f.sb.Tokens.URL, DeviceCodeURL: f.sb.Tokens.DeviceCodeURL(),
				Scopes:     []string{config.MicrosoftSMTPScope, "offline_access"},
				HTTPClient: oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: f.sb.CA.Pool}),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var rt string
			switch method {
			case "device":
				rt, err = a.DeviceCode(ctx, func(_, code, _ string) {
					go func() {
						// Approve once a poll was answered "pending".
						testutil.WaitFor(t, 10*time.Second, "a pending poll", func() bool { return f.sb.Tokens.TotalRequests() >= 1 })
						f.sb.Tokens.ApproveDevice(code, user)
					}()
				})
			case "browser":
				f.sb.Tokens.SetBrowserUser(user)
				rt, err = a.Browser(ctx, func(u string) {
					// The browser: signed in already, it follows the
					// redirect back to the loopback listener.
					go func() {
						resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(f.sb)}}).Get(u)
						if err == nil {
							resp.Body.Close()
						}
					}()
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			if !f.sb.Tokens.RefreshTokenValid(rt) {
				t.Error("the refresh token is not one the sandbox issued")
			}
			if got := f.sb.Tokens.GrantsWith(devsandbox.CertificateThumbprint(f.app.Certificate)); got != 1 {
				t.Errorf("grants with the certificate = %d, want 1", got)
			}
		})
	}
}
