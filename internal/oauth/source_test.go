package oauth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	clientID = "test-client"
	secret   = "test-client-secret"
	user     = "user@example.com"
)

// fixture is a sandbox token endpoint with one delegated client.
type fixture struct {
	sb *devsandbox.Sandbox
	rt atomic.Value // current configured refresh token
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{sb: testutil.Sandbox(t, devsandbox.Options{})}
	f.sb.Tokens.AddClient(clientID, secret)
	f.rt.Store(f.sb.Tokens.IssueRefreshToken(clientID, user, config.GoogleScope))
	return f
}

func (f *fixture) settings() oauth.Settings {
	return oauth.Settings{
		Name:         user,
		Flow:         config.FlowRefreshToken,
		TokenURL:     f.sb.Tokens.URL,
		ClientID:     clientID,
		ClientSecret: func() (string, error) { return secret, nil },
		RefreshToken: func() (string, error) { return f.rt.Load().(string), nil },
		HTTPClient: oauth.NewHTTPClient(oauth.HTTPOptions{
			RootCAs: f.sb.CA.Pool, RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
		}),
	}
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.SetDelay(200 * time.Millisecond)
	src := oauth.NewSource(f.settings())
	const n = 1000
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			tokens[i], errs[i] = src.Token(context.Background())
		}(i)
	}
	close(start)
	wg.Wait()
	for i := range tokens {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("caller %d got a different token", i)
		}
	}
	if got := f.sb.Tokens.TotalRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if _, ok := f.sb.Tokens.Lookup(tokens[0]); !ok {
		t.Error("the token is not one the endpoint issued")
	}
}

func TestEarlyRefresh(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.SetAccessTokenTTL(time.Hour)
	clk := newClock()
	s := f.settings()
	s.Now = clk.Now
	s.RefreshBeforeExpiry = 5 * time.Minute
	src := oauth.NewSource(s)
	first, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(54 * time.Minute)
	if tok, _ := src.Token(context.Background()); tok != first {
		t.Error("token replaced more than 5 minutes before expiry")
	}
	clk.Advance(2 * time.Minute) // 4 minutes before expiry
	second, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Error("token not replaced within 5 minutes of expiry")
	}
	if got := f.sb.Tokens.TotalRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
}

func TestShortLivedTokensAreStillReused(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.SetAccessTokenTTL(10 * time.Second) // shorter than the 5 min margin
	clk := newClock()
	s := f.settings()
	s.Now = clk.Now
	src := oauth.NewSource(s)
	first, _ := src.Token(context.Background())
	clk.Advance(4 * time.Second)
	if tok, _ := src.Token(context.Background()); tok != first {
		t.Error("a 10s token was not reused for 4s")
	}
	clk.Advance(2 * time.Second) // past half-life
	if tok, _ := src.Token(context.Background()); tok == first {
		t.Error("a 10s token was reused past its half-life")
	}
}

func TestRotatedRefreshTokenIsAdopted(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.SetRotateRefreshTokens(true)
	original := f.rt.Load().(string)
	var rotations []string
	s := f.settings()
	s.OnRotate = func(rt string) { rotations = append(rotations, rt) }
	src := oauth.NewSource(s)
	for i := 0; i < 3; i++ {
		tok, err := src.Token(context.Background())
		if err != nil {
			t.Fatalf("refresh %d: %v (the rotated refresh token was not used)", i, err)
		}
		src.Invalidate(tok)
	}
	if len(rotations) != 3 {
		t.Fatalf("OnRotate called %d times, want 3", len(rotations))
	}
	if f.sb.Tokens.RefreshTokenValid(original) || !f.sb.Tokens.RefreshTokenValid(rotations[2]) {
		t.Error("the endpoint's view of the refresh tokens is not what the source used")
	}
	// When the configured token changes (an operator stored a new one), it
	// wins over the rotated one.
	fresh := f.sb.Tokens.IssueRefreshToken(clientID, user)
	f.rt.Store(fresh)
	f.sb.Tokens.RevokeRefreshToken(rotations[2])
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatalf("configured refresh token not picked up: %v", err)
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.FailNext(2, 503)
	src := oauth.NewSource(f.settings())
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatalf("token after two 503s: %v", err)
	}
	if got := f.sb.Tokens.TotalRequests(); got != 3 {
		t.Errorf("requests = %d, want 3 (two retries)", got)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.FailNext(10, 500)
	src := oauth.NewSource(f.settings())
	_, err := src.Token(context.Background())
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Permanent || oe.HTTPStatus != 500 {
		t.Fatalf("err = %#v, want a temporary HTTP 500 error", err)
	}
	if got := f.sb.Tokens.TotalRequests(); got != 4 {
		t.Errorf("requests = %d, want 4 (1 + RetryMax 3)", got)
	}
}

func TestPermanentErrorIsRememberedNotRetried(t *testing.T) {
	f := newFixture(t)
	clk := newClock()
	s := f.settings()
	s.Now = clk.Now
	s.ErrorBackoff = time.Minute
	src := oauth.NewSource(s)
	f.sb.Tokens.RevokeRefreshToken(f.rt.Load().(string))

	_, err := src.Token(context.Background())
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != "invalid_grant" || !oe.Permanent || oe.Remembered {
		t.Fatalf("first error = %v", err)
	}
	if !strings.Contains(oe.Hint(), "re-authorise") {
		t.Errorf("hint = %q", oe.Hint())
	}
	for i := 0; i < 5; i++ {
		_, err = src.Token(context.Background())
		if !errors.As(err, &oe) || !oe.Remembered {
			t.Fatalf("call %d: %v, want the remembered error", i, err)
		}
	}
	if got := f.sb.Tokens.TotalRequests(); got != 1 {
		t.Errorf("requests = %d, want 1 (4xx is not retried, and is remembered)", got)
	}
	clk.Advance(61 * time.Second)
	_, _ = src.Token(context.Background())
	if got := f.sb.Tokens.TotalRequests(); got != 2 {
		t.Errorf("requests after the backoff = %d, want 2", got)
	}
	// A new refresh token clears the failure at once.
	f.rt.Store(f.sb.Tokens.IssueRefreshToken(clientID, user))
	if _, err := src.Token(context.Background()); err != nil {
		t.Errorf("after the refresh token was replaced: %v", err)
	}
	if st := src.Status(); !st.HasToken || st.LastError != "" {
		t.Errorf("status = %+v", st)
	}
}

func TestValidTokenSurvivesFailedEarlyRefresh(t *testing.T) {
	f := newFixture(t)
	clk := newClock()
	s := f.settings()
	s.Now = clk.Now
	src := oauth.NewSource(s)
	first, _ := src.Token(context.Background())
	f.sb.Tokens.RevokeRefreshToken(f.rt.Load().(string))
	clk.Advance(57 * time.Minute) // inside the early-refresh window, not expired
	tok, err := src.Token(context.Background())
	if err != nil || tok != first {
		t.Fatalf("Token = %q, %v; want the still-valid token", tok, err)
	}
	clk.Advance(3 * time.Minute) // now expired
	if _, err := src.Token(context.Background()); err == nil {
		t.Error("an expired token was served")
	}
}

func TestClientCredentialsAndServiceAccount(t *testing.T) {
	f := newFixture(t)
	f.sb.Tokens.AddClient("app-only", "app-secret")
	key, err := f.sb.Tokens.AddServiceAccount("svc@project.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	base := f.settings()
	cc := base
	cc.Flow, cc.ClientID, cc.RefreshToken = config.FlowClientCredentials, "app-only", nil
	cc.ClientSecret = func() (string, error) { return "app-secret", nil }
	cc.Scopes = []string{config.MicrosoftAppOnlyScope}
	sa := base
	sa.Flow, sa.ClientID, sa.ClientSecret, sa.RefreshToken = config.FlowServiceAccount, "", nil, nil
	sa.ServiceAccountKey = func() (string, error) { return string(key), nil }
	sa.Subject = "mailbox@example.com"
	sa.Scopes = []string{config.GoogleScope}

	for name, s := range map[string]oauth.Settings{"client_credentials": cc, "service_account": sa} {
		tok, err := oauth.NewSource(s).Token(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		g, ok := f.sb.Tokens.Lookup(tok)
		if !ok {
			t.Fatalf("%s: token not issued by the endpoint", name)
		}
		wantUser := devsandbox.AppOnly
		if name == "service_account" {
			wantUser = "mailbox@example.com"
		}
		if g.User != wantUser || g.Scope != s.Scopes[0] {
			t.Errorf("%s: grant = %+v", name, g)
		}
	}

	bad := cc
	bad.ClientSecret = func() (string, error) { return "wrong", nil }
	_, err = oauth.NewSource(bad).Token(context.Background())
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || !oe.Permanent {
		t.Errorf("wrong client secret: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error reveals the secret: %v", err)
	}
}

func TestUntrustedEndpointIsNotRetried(t *testing.T) {
	f := newFixture(t)
	s := f.settings()
	s.HTTPClient = oauth.NewHTTPClient(oauth.HTTPOptions{RetryMax: 3, RetryWaitMin: time.Millisecond}) // system roots only
	_, err := oauth.NewSource(s).Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
}

func TestSecretUnavailable(t *testing.T) {
	f := newFixture(t)
	s := f.settings()
	store, err := secrets.Load(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := config.ParseSecretRef("env://NOT_LOADED", config.SecretRef{}.Range)
	s.RefreshToken = store.Getter(ref)
	_, err = oauth.NewSource(s).Token(context.Background())
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != "secret_unavailable" {
		t.Fatalf("err = %v", err)
	}
	if f.sb.Tokens.TotalRequests() != 0 {
		t.Error("the endpoint was asked without a refresh token")
	}
}
