package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	vault "github.com/hashicorp/vault/api"
	"github.com/zclconf/go-cty/cty"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// legacyAccount is one entry of the v2 Python proxy's accounts.json.
type legacyAccount struct {
	AccountID     string `json:"account_id"`
	Email         string `json:"email"`
	Provider      string `json:"provider"` // gmail | outlook
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret"`
	RefreshToken  string `json:"refresh_token"`
	OAuthEndpoint string `json:"oauth_endpoint"` // host:port
	OAuthTokenURL string `json:"oauth_token_url"`
	RateLimiting  *struct {
		MessagesPerHour int `json:"messages_per_hour"`
	} `json:"rate_limiting_settings"`
	ConnectionSettings map[string]any `json:"connection_settings"`
}

// legacyGroup gathers the accounts of one provider and OAuth client.
type legacyGroup struct {
	name, provider, clientID, clientSecret, tokenURL, smtp string
	accounts                                               []legacyAccount
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	return strings.Trim(nonWord.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

func envName(parts ...string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.Join(append([]string{"OAUTHRELAY"}, parts...), "_"), "-", "_"))
}

// cmdImportLegacy converts the legacy proxy's accounts.json into HCL.
func cmdImportLegacy(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("import-legacy", stdio)
	out := fs.String("out", "-", "where to write the HCL (- for standard output)")
	vaultPrefix := fs.String("vault-prefix", "", "write the secrets into Vault KV v2 under this mount/path (e.g. secret/oauthrelay/legacy) and reference them; needs VAULT_ADDR and VAULT_TOKEN")
	printSecrets := fs.Bool("print-secrets", false, "with env:// references, print export lines including the secret values")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay import-legacy [-vault-prefix mount/path] [-out file.hcl] accounts.json")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stdio.Stderr, "oauthrelay import-legacy: "+format+"\n", a...)
		return 1
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail("%v", err)
	}
	var accounts []legacyAccount
	if err := json.Unmarshal(raw, &accounts); err != nil {
		// json errors quote no content beyond an offset and a type.
		return fail("%s is not a JSON array of accounts: %v", fs.Arg(0), err)
	}
	groups, err := groupLegacy(accounts)
	if err != nil {
		return fail("%v", err)
	}

	var secrets secretSink
	if *vaultPrefix != "" {
		mount, base, ok := strings.Cut(strings.Trim(*vaultPrefix, "/"), "/")
		if !ok || mount == "" || base == "" {
			return fail("-vault-prefix must be <kv-v2 mount>/<path>, such as secret/oauthrelay/legacy")
		}
		vc, err := vault.NewClient(vault.DefaultConfig())
		if err != nil {
			return fail("vault client: %v", err)
		}
		secrets = &vaultSink{ctx: ctx, kv: vc.KVv2(mount), mount: mount, base: base, addr: vc.Address()}
	} else {
		secrets = &envSink{}
	}
	hcl, err := legacyHCL(groups, secrets)
	if err != nil {
		return fail("%v", err)
	}
	var w io.Writer = stdio.Stdout
	if *out != "-" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fail("%v", err)
		}
		defer f.Close()
		w = f
	}
	if _, err := w.Write(hcl); err != nil {
		return fail("%v", err)
	}
	secrets.report(stdio.Stderr, *printSecrets)
	fmt.Fprintf(stdio.Stderr, "imported %d account(s) into %d group(s); add client blocks (oauthrelay hash-password) and a TLS listener, then run oauthrelay validate\n", len(accounts), len(groups))
	return 0
}

func groupLegacy(accounts []legacyAccount) ([]*legacyGroup, error) {
	byKey := map[string]*legacyGroup{}
	var order []string
	seen := map[string]bool{}
	for i, a := range accounts {
		a.Email = strings.ToLower(strings.TrimSpace(a.Email))
		if a.Email == "" || a.RefreshToken == "" || a.ClientID == "" {
			return nil, fmt.Errorf("entry %d (%q) lacks email, client_id or refresh_token", i, a.AccountID)
		}
		if seen[a.Email] {
			return nil, fmt.Errorf("entry %d: %s appears twice", i, a.Email)
		}
		seen[a.Email] = true
		if a.AccountID == "" {
			a.AccountID = a.Email
		}
		var provider string
		switch strings.ToLower(a.Provider) {
		case "gmail", "google":
			provider = config.PresetGoogle
		case "outlook", "microsoft", "office365":
			provider = config.PresetMicrosoft
		default:
			return nil, fmt.Errorf("entry %d (%s): unknown provider %q (gmail or outlook)", i, a.Email, a.Provider)
		}
		key := provider + "\x00" + a.ClientID + "\x00" + a.OAuthTokenURL + "\x00" + a.OAuthEndpoint
		g, ok := byKey[key]
		if !ok {
			g = &legacyGroup{provider: provider, clientID: a.ClientID, clientSecret: a.ClientSecret, tokenURL: a.OAuthTokenURL, smtp: a.OAuthEndpoint}
			byKey[key] = g
			order = append(order, key)
		} else if g.clientSecret != a.ClientSecret {
			return nil, fmt.Errorf("entry %d (%s): client %s has two different client secrets in the file", i, a.Email, a.ClientID)
		}
		g.accounts = append(g.accounts, a)
	}
	var out []*legacyGroup
	used := map[string]int{}
	for _, k := range order {
		g := byKey[k]
		name := "legacy-" + map[string]string{config.PresetGoogle: "gmail", config.PresetMicrosoft: "outlook"}[g.provider]
		if used[name]++; used[name] > 1 {
			name = fmt.Sprintf("%s-%d", name, used[name])
		}
		g.name = name
		out = append(out, g)
	}
	return out, nil
}

// legacyHCL renders the configuration with hclwrite, so it is formatted
// like `terraform fmt` would.
func legacyHCL(groups []*legacyGroup, secrets secretSink) ([]byte, error) {
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	if vs, ok := secrets.(*vaultSink); ok {
		vb := body.AppendNewBlock("vault", nil).Body()
		vb.SetAttributeValue("address", cty.StringVal(vs.addr))
		vb.AppendNewBlock("auth", []string{"token"}).Body().SetAttributeValue("token", cty.StringVal("env://VAULT_TOKEN"))
		body.AppendNewline()
	}
	lis := body.AppendNewBlock("listener", []string{"submission"}).Body()
	lis.SetAttributeValue("address", cty.StringVal("127.0.0.1:2525"))
	lis.SetAttributeValue("tls_mode", cty.StringVal("none"))
	body.AppendNewline()
	for _, g := range groups {
		p := body.AppendNewBlock("provider", []string{g.name}).Body()
		p.SetAttributeValue("preset", cty.StringVal(g.provider))
		switch g.provider {
		case config.PresetGoogle:
			if g.tokenURL != "" && g.tokenURL != config.GoogleTokenURL {
				p.SetAttributeValue("token_url", cty.StringVal(g.tokenURL))
			}
			if g.smtp != "" && g.smtp != config.GoogleSMTPAddress {
				p.SetAttributeValue("smtp_address", cty.StringVal(g.smtp))
			}
		case config.PresetMicrosoft:
			if tenant := tenantOf(g.tokenURL); tenant != "" {
				p.SetAttributeValue("tenant", cty.StringVal(tenant))
			} else {
				p.SetAttributeValue("tenant", cty.StringVal("common"))
				if g.tokenURL != "" {
					p.SetAttributeValue("token_url", cty.StringVal(g.tokenURL))
				}
			}
			if g.smtp != "" && g.smtp != config.MicrosoftSMTPAddress {
				p.SetAttributeValue("smtp_address", cty.StringVal(g.smtp))
			}
		}
		if g.smtp != "" {
			if _, port, err := net.SplitHostPort(g.smtp); err == nil && port == "465" {
				p.SetAttributeValue("smtp_tls", cty.StringVal("implicit"))
			}
		}
		body.AppendNewline()

		gb := body.AppendNewBlock("account_group", []string{g.name}).Body()
		gb.SetAttributeValue("provider", cty.StringVal(g.name))
		gb.SetAttributeValue("flow", cty.StringVal(config.FlowRefreshToken))
		gb.SetAttributeValue("client_id", cty.StringVal(g.clientID))
		if g.clientSecret != "" {
			ref, err := secrets.store(g.name+"-client", "client_secret", g.clientSecret, envName(g.name, "CLIENT_SECRET"))
			if err != nil {
				return nil, err
			}
			gb.SetAttributeValue("client_secret", cty.StringVal(ref))
		}
		for _, a := range g.accounts {
			gb.AppendNewline()
			ab := gb.AppendNewBlock("account", []string{a.Email}).Body()
			ref, err := secrets.store("accounts/"+slug(a.AccountID), "refresh_token", a.RefreshToken, envName("RT", slug(a.AccountID)))
			if err != nil {
				return nil, err
			}
			ab.SetAttributeValue("refresh_token", cty.StringVal(ref))
			if a.RateLimiting != nil && a.RateLimiting.MessagesPerHour > 0 {
				perMinute := int(math.Ceil(float64(a.RateLimiting.MessagesPerHour) / 60))
				ab.SetAttributeValue("rate_limit_per_minute", cty.NumberIntVal(int64(perMinute)))
			}
			if v, ok := a.ConnectionSettings["max_connections"].(float64); ok && v > 0 {
				ab.SetAttributeValue("max_connections", cty.NumberIntVal(int64(v)))
			}
		}
		body.AppendNewline()
	}
	return hclwrite.Format(f.Bytes()), nil
}

// tenantOf extracts the tenant from a Microsoft v2 token URL.
func tenantOf(tokenURL string) string {
	u, err := url.Parse(tokenURL)
	if err != nil || !strings.EqualFold(u.Host, "login.microsoftonline.com") {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token" {
		return parts[0]
	}
	return ""
}

// secretSink stores a secret somewhere and returns the reference to it.
type secretSink interface {
	store(path, field, value, env string) (string, error)
	report(w io.Writer, printValues bool)
}

// envSink emits env:// references and reports the variables to set.
type envSink struct {
	names  []string
	values map[string]string
}

func (e *envSink) store(_, _, value, env string) (string, error) {
	if e.values == nil {
		e.values = map[string]string{}
	}
	if _, dup := e.values[env]; !dup {
		e.names = append(e.names, env)
	}
	e.values[env] = value
	return "env://" + env, nil
}

func (e *envSink) report(w io.Writer, printValues bool) {
	sort.Strings(e.names)
	if printValues {
		fmt.Fprintln(w, "# set these in the relay's environment (they contain secrets):")
		for _, n := range e.names {
			fmt.Fprintf(w, "export %s='%s'\n", n, strings.ReplaceAll(e.values[n], "'", `'\''`))
		}
		return
	}
	fmt.Fprintf(w, "set these %d environment variables for the relay (values are in accounts.json; -print-secrets prints them):\n", len(e.names))
	for _, n := range e.names {
		fmt.Fprintf(w, "  %s\n", n)
	}
}

// vaultSink writes each secret to Vault KV v2, keeping other fields.
type vaultSink struct {
	ctx         context.Context
	kv          *vault.KVv2
	mount, base string
	addr        string
	written     []string
}

func (v *vaultSink) store(path, field, value, _ string) (string, error) {
	full := v.base + "/" + path
	data := map[string]any{}
	if cur, err := v.kv.Get(v.ctx, full); err == nil {
		for k, val := range cur.Data {
			data[k] = val
		}
	}
	if data[field] != value {
		data[field] = value
		if _, err := v.kv.Put(v.ctx, full, data); err != nil {
			return "", fmt.Errorf("writing vault://%s/%s: %w", v.mount, full, err)
		}
		v.written = append(v.written, fmt.Sprintf("vault://%s/%s#%s", v.mount, full, field))
	}
	return fmt.Sprintf("vault://%s/%s#%s", v.mount, full, field), nil
}

func (v *vaultSink) report(w io.Writer, _ bool) {
	fmt.Fprintf(w, "wrote %d secret(s) to Vault:\n", len(v.written))
	for _, p := range v.written {
		fmt.Fprintf(w, "  %s\n", p)
	}
	fmt.Fprintln(w, "add a vault block to the configuration so the relay can read them")
}
