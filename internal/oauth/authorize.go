package oauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// Authorization obtains the first refresh token of a mailbox, with the
// mailbox's owner signing in once.
type Authorization struct {
	ClientID, ClientSecret string
	AuthURL, TokenURL      string
	DeviceCodeURL          string
	Scopes                 []string
	// ClientCertificate, when set, authenticates the client with a signed
	// assertion in each token request instead of ClientSecret.
	ClientCertificate *ClientCertificate
	// LoginHint pre-fills the account in the provider's sign-in page.
	LoginHint  string
	HTTPClient *http.Client
}

func (a Authorization) config() *oauth2.Config {
	return &oauth2.Config{
		ClientID:     a.ClientID,
		ClientSecret: a.ClientSecret,
		Scopes:       a.Scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL:       a.AuthURL,
			TokenURL:      a.TokenURL,
			DeviceAuthURL: a.DeviceCodeURL,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
	}
}

func (a Authorization) ctx(ctx context.Context) context.Context {
	client := a.HTTPClient
	if a.ClientCertificate != nil {
		if client == nil {
			client = http.DefaultClient
		}
		client = withClientAssertions(client, a.TokenURL, a.ClientID, a.ClientCertificate, time.Now)
	}
	if client != nil {
		return context.WithValue(ctx, oauth2.HTTPClient, client)
	}
	return ctx
}

// DeviceCode runs the device authorization grant (RFC 8628), Microsoft's
// way for headless hosts: show tells the user where to go and which code to
// enter; the call returns once they signed in.
func (a Authorization) DeviceCode(ctx context.Context, show func(verificationURI, userCode, message string)) (string, error) {
	cfg := a.config()
	ctx = a.ctx(ctx)
	resp, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return "", classify("device authorization", err)
	}
	show(resp.VerificationURI, resp.UserCode, "")
	tok, err := cfg.DeviceAccessToken(ctx, resp)
	if err != nil {
		return "", classify("device authorization", err)
	}
	if tok.RefreshToken == "" {
		return "", errors.New("the provider returned no refresh token: request the offline_access scope")
	}
	return tok.RefreshToken, nil
}

// Browser runs the authorization code grant with PKCE (RFC 7636) and a
// loopback redirect (RFC 8252 §7.3), Google's way for installed apps: open
// is given the URL to open in a browser signed in as the mailbox.
func (a Authorization) Browser(ctx context.Context, open func(url string)) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	cfg := a.config()
	cfg.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()
	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		res := result{code: q.Get("code")}
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the redirect carried the wrong state; try again")
		case q.Get("error") != "":
			res.err = fmt.Errorf("the provider refused the authorisation: %s %s", q.Get("error"), q.Get("error_description"))
		case res.code == "":
			res.err = errors.New("the redirect carried no code")
		}
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "oauthrelay: authorisation received; you can close this window.")
		}
		select {
		case got <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	opts := []oauth2.AuthCodeOption{oauth2.AccessTypeOffline, oauth2.ApprovalForce, oauth2.S256ChallengeOption(verifier)}
	if a.LoginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", a.LoginHint))
	}
	open(cfg.AuthCodeURL(state, opts...))
	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if res.err != nil {
		return "", res.err
	}
	tok, err := cfg.Exchange(a.ctx(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", classify("code exchange", err)
	}
	if tok.RefreshToken == "" {
		return "", errors.New("the provider returned no refresh token: the consent must allow offline access")
	}
	return tok.RefreshToken, nil
}
