package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/server"
)

func cmdAccount(ctx context.Context, args []string, stdio IO) int {
	if len(args) == 0 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay account test|authorize -config PATH ADDRESS")
		return 2
	}
	switch args[0] {
	case "test":
		return cmdAccountTest(ctx, args[1:], stdio)
	case "authorize":
		return cmdAccountAuthorize(ctx, args[1:], stdio)
	}
	fmt.Fprintf(stdio.Stderr, "oauthrelay account: unknown subcommand %q (use test or authorize)\n", args[0])
	return 2
}

// cmdAccountTest checks one account end to end without sending mail.
func cmdAccountTest(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("account test", stdio)
	path := fs.String("config", "", "configuration file or directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay account test -config PATH ADDRESS")
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{ClientsOptional: true}, stdio)
	if cfg == nil {
		return 1
	}
	address := fs.Arg(0)
	steps := server.ProbeAccount(ctx, cfg, address, nil)
	fmt.Fprintf(stdio.Stdout, "account %s\n", strings.ToLower(address))
	ok := true
	for _, s := range steps {
		mark := "ok  "
		if !s.OK {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(stdio.Stdout, "  %s %-8s %s\n", mark, s.Name, s.Detail)
		if !s.OK && s.Fix != "" {
			fmt.Fprintf(stdio.Stdout, "       fix: %s\n", s.Fix)
		}
	}
	if !ok {
		fmt.Fprintf(stdio.Stdout, "FAILED: the relay cannot send as %s yet\n", address)
		return 1
	}
	fmt.Fprintf(stdio.Stdout, "OK: the relay can send as %s (nothing was sent)\n", address)
	return 0
}

// cmdAccountAuthorize obtains an account's first refresh token and stores
// it where the account's refresh_token reference points.
func cmdAccountAuthorize(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("account authorize", stdio)
	path := fs.String("config", "", "configuration file or directory")
	method := fs.String("method", "", "device (device code, Microsoft's default) or browser (loopback redirect with PKCE, Google's)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the sign-in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay account authorize -config PATH [-method device|browser] ADDRESS")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stdio.Stderr, "oauthrelay account authorize: "+format+"\n", a...)
		return 1
	}
	cfg := loadConfig(*path, config.Overrides{ClientsOptional: true}, stdio)
	if cfg == nil {
		return 1
	}
	address := strings.ToLower(fs.Arg(0))
	var acct *config.Account
	for _, a := range cfg.Accounts() {
		if a.Address == address {
			acct = a
		}
	}
	if acct == nil {
		return fail("%s is not an account of this configuration", address)
	}
	g, p := acct.Group, acct.Group.Provider
	if g.Flow != config.FlowRefreshToken {
		return fail("%s uses flow %q, which needs no user authorisation", address, g.Flow)
	}
	if *method == "" {
		*method = "browser"
		if p.DeviceCodeURL != "" {
			*method = "device"
		}
	}

	// Secrets: the client credential to authorise with, and Vault to store in.
	store, vc, err := resolveSecrets(ctx, cfg, g.CredentialRefs())
	if err != nil {
		return fail("%v", err)
	}
	clientSecret := ""
	if g.ClientSecret.IsSet() {
		clientSecret, _ = store.Get(g.ClientSecret)
	}
	cert, err := groupClientCertificate(g, store)
	if err != nil {
		return fail("account group %q: %v", g.Name, err)
	}
	roots, err := server.RootCAs(p.CAFile)
	if err != nil {
		return fail("%v", err)
	}
	auth := oauth.Authorization{
		ClientID: g.ClientID, ClientSecret: clientSecret, ClientCertificate: cert,
		AuthURL: p.AuthURL, TokenURL: p.TokenURL, DeviceCodeURL: p.DeviceCodeURL,
		Scopes: g.Scopes, LoginHint: address,
		HTTPClient: oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: roots, RetryMax: 2}),
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var rt string
	switch *method {
	case "device":
		if p.DeviceCodeURL == "" {
			return fail("provider %q has no device_code_url; use -method browser", p.Name)
		}
		rt, err = auth.DeviceCode(ctx, func(uri, code, _ string) {
			fmt.Fprintf(stdio.Stdout, "Sign in as %s: open %s and enter the code %s\n", address, uri, code)
		})
	case "browser":
		if p.AuthURL == "" {
			return fail("provider %q has no auth_url; use -method device", p.Name)
		}
		rt, err = auth.Browser(ctx, func(u string) {
			fmt.Fprintf(stdio.Stdout, "Open this URL in a browser signed in as %s (this host must be able to receive the redirect on 127.0.0.1):\n%s\n", address, u)
		})
	default:
		return fail("unknown -method %q (device or browser)", *method)
	}
	if err != nil {
		return fail("%v", err)
	}

	ref := acct.RefreshToken
	switch ref.Scheme {
	case config.SecretVault:
		version, err := vc.StoreValue(ctx, ref.VaultMount, ref.VaultPath, ref.VaultField, rt)
		if err != nil {
			return fail("storing the refresh token: %v", err)
		}
		fmt.Fprintf(stdio.Stdout, "Stored the refresh token in %s (version %d); running relays pick it up within their poll_interval.\n", ref, version)
	case config.SecretFile:
		if err := secrets.WriteFile(ref.FilePath, rt); err != nil {
			return fail("storing the refresh token: %v", err)
		}
		fmt.Fprintf(stdio.Stdout, "Stored the refresh token in %s; reload the relay (SIGHUP) to use it.\n", ref.FilePath)
	case config.SecretEnv:
		fmt.Fprintf(stdio.Stdout, "Set this in the relay's environment (it is a secret):\nexport %s='%s'\n", ref.EnvName, rt)
	default:
		fmt.Fprintf(stdio.Stdout, "The account's refresh_token is a literal; replace it with this value (it is a secret) or, better, a reference:\n%s\n", rt)
	}
	return 0
}
