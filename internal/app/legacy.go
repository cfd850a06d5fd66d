package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	vault "github.com/hashicorp/vault/api"
	"github.com/zclconf/go-cty/cty"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// legacyAccount is one entry of the v2 Python proxy's accounts.json. Its
// limits come in two shapes: nested (rate_limiting_settings.messages_per_hour,
// connection_settings.max_connections) and flat (max_messages_per_hour,
// max_concurrent_messages). Every JSON field the importer maps is a field
// here; any other field of the input is reported as not imported.
type legacyAccount struct {
	AccountID             string              `json:"account_id"`
	Email                 string              `json:"email"`
	Provider              string              `json:"provider"` // gmail | outlook
	ClientID              string              `json:"client_id"`
	ClientSecret          string              `json:"client_secret"`
	RefreshToken          string              `json:"refresh_token"`
	OAuthEndpoint         string              `json:"oauth_endpoint"` // host:port
	OAuthTokenURL         string              `json:"oauth_token_url"`
	RateLimiting          *legacyRateLimiting `json:"rate_limiting_settings"`
	ConnectionSettings    *legacyConnection   `json:"connection_settings"`
	MaxMessagesPerHour    *int                `json:"max_messages_per_hour"`
	MaxConcurrentMessages *int                `json:"max_concurrent_messages"`

	label  string       // names the account in messages: its email or entry number
	limits legacyLimits // what the relay enforces instead of the legacy limits
}

type legacyRateLimiting struct {
	MessagesPerHour *int `json:"messages_per_hour"`
}

type legacyConnection struct {
	MaxConnections *int `json:"max_connections"`
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
	warn := func(w string) { fmt.Fprintf(stdio.Stderr, "oauthrelay import-legacy: warning: %s\n", w) }
	accounts, err := readLegacyAccounts(fs.Arg(0), warn)
	if err != nil {
		return fail("%v", err)
	}
	groups, err := groupLegacy(accounts, warn)
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

// readLegacyAccounts reads accounts.json: a list of accounts, or an object
// holding that list under "accounts" (the v2 proxy's documented layout).
// Fields that cannot be imported are reported through warn by name only:
// a field the importer does not know may hold a secret.
func readLegacyAccounts(path string, warn func(string)) ([]legacyAccount, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	entries, err := legacyEntries(path, raw, warn)
	if err != nil {
		return nil, err
	}
	accounts := make([]legacyAccount, 0, len(entries))
	for i, entry := range entries {
		a, err := decodeLegacyAccount(i, entry, warn)
		if err != nil {
			return nil, err
		}
		accounts = append(accounts, a)
	}
	return accounts, nil
}

// legacyEntries returns the raw entries of the list of accounts. JSON
// errors quote no content beyond an offset, a character and a type.
func legacyEntries(path string, raw []byte, warn func(string)) ([]json.RawMessage, error) {
	var top json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", path, err)
	}
	var list []json.RawMessage
	switch top = bytes.TrimSpace(top); top[0] {
	case '[':
		err := json.Unmarshal(top, &list)
		return list, err
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(top, &obj); err == nil && json.Unmarshal(obj["accounts"], &list) == nil && list != nil {
			for _, k := range sortedKeys(obj) {
				if k != "accounts" {
					warn(fmt.Sprintf("top-level field %q has no oauthrelay equivalent; not imported", k))
				}
			}
			return list, nil
		}
		return nil, fmt.Errorf(`%s holds a JSON object; expected a list of accounts ([{"email": ..., "refresh_token": ...}, ...]) or an object with that list under "accounts"`, path)
	}
	return nil, fmt.Errorf("%s holds a JSON %s; expected a list of accounts", path, jsonKind(top[0]))
}

func jsonKind(first byte) string {
	switch first {
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// decodeLegacyAccount decodes one entry and warns about each of its fields
// that legacyAccount does not map.
func decodeLegacyAccount(i int, raw json.RawMessage, warn func(string)) (legacyAccount, error) {
	var a legacyAccount
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return a, fmt.Errorf("entry %d is not a JSON object", i)
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("entry %d: %s", i, describeJSONError(err))
	}
	a.label = strings.ToLower(strings.TrimSpace(a.Email))
	if a.label == "" {
		a.label = fmt.Sprintf("entry %d", i)
	}
	for _, f := range unmappedFields(fields, reflect.TypeOf(a), "") {
		warn(fmt.Sprintf("account %s: field %q has no oauthrelay equivalent; not imported", a.label, f))
	}
	return a, nil
}

// describeJSONError names the field and the expected type, never the value.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	want := te.Type.String()
	switch te.Type.Kind() {
	case reflect.Int:
		want = "a whole number"
	case reflect.String:
		want = "a string"
	case reflect.Struct:
		want = "an object"
	}
	return fmt.Sprintf("field %s must be %s", te.Field, want)
}

// unmappedFields lists the keys of a JSON object that no field of typ
// decodes, descending into the nested objects typ decodes. Keys match
// case-insensitively, as encoding/json matches them.
func unmappedFields(fields map[string]json.RawMessage, typ reflect.Type, prefix string) []string {
	known := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); f.IsExported() && name != "" && name != "-" {
			known[strings.ToLower(name)] = f.Type
		}
	}
	var out []string
	for _, k := range sortedKeys(fields) {
		ft, ok := known[strings.ToLower(k)]
		if !ok {
			out = append(out, prefix+k)
			continue
		}
		var nested map[string]json.RawMessage
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct && json.Unmarshal(fields[k], &nested) == nil {
			out = append(out, unmappedFields(nested, ft.Elem(), prefix+k+".")...)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Microsoft's per-mailbox limits (README, "Setting up Microsoft 365"), which
// the microsoft preset applies: an imported limit never goes beyond them, or
// Microsoft would throttle the account (432 4.3.2 for a 4th connection).
const (
	microsoftMessagesPerMinute = 30
	microsoftConnections       = 3
)

// legacyLimits are the account attributes that stand in for the legacy
// limits; zero leaves an attribute to the provider's default.
type legacyLimits struct {
	perMinute, burst, daily, maxConnections int
	comment                                 string // explains the rate mapping in the HCL
}

// mapLegacyLimits maps messages per hour and concurrent messages onto the
// account's rate limit and connection pool (see README, import-legacy).
func mapLegacyLimits(a legacyAccount, provider string, warn func(string)) legacyLimits {
	var l legacyLimits
	var nestedRate, nestedConns *int
	if a.RateLimiting != nil {
		nestedRate = a.RateLimiting.MessagesPerHour
	}
	if a.ConnectionSettings != nil {
		nestedConns = a.ConnectionSettings.MaxConnections
	}
	if perHour := pickLegacyLimit(a.label, warn, "max_messages_per_hour", a.MaxMessagesPerHour, "rate_limiting_settings.messages_per_hour", nestedRate); perHour > 0 {
		l.setHourlyRate(perHour)
		if provider == config.PresetMicrosoft && l.perMinute > microsoftMessagesPerMinute {
			warn(fmt.Sprintf("account %s: %d messages an hour exceed Microsoft's %d a minute; imported as %d a minute", a.label, perHour, microsoftMessagesPerMinute, microsoftMessagesPerMinute))
			l.perMinute, l.burst = microsoftMessagesPerMinute, microsoftMessagesPerMinute
			l.comment = fmt.Sprintf("%d messages an hour in accounts.json; Microsoft allows %d a minute", perHour, microsoftMessagesPerMinute)
		}
	}
	if conns := pickLegacyLimit(a.label, warn, "max_concurrent_messages", a.MaxConcurrentMessages, "connection_settings.max_connections", nestedConns); conns > 0 {
		l.maxConnections = conns
		if provider == config.PresetMicrosoft && conns > microsoftConnections {
			warn(fmt.Sprintf("account %s: %d concurrent messages exceed Microsoft's %d connections per mailbox; imported as max_connections = %d", a.label, conns, microsoftConnections, microsoftConnections))
			l.maxConnections = microsoftConnections
		}
	}
	return l
}

// setHourlyRate maps n messages an hour onto the relay's token bucket: n/60
// a minute, rounded up to a whole message, and bursts of at most one
// minute's worth (the legacy bucket let a whole hour's worth out at once).
// Below 60 an hour the rate cannot go lower than one a minute, so a rolling
// daily limit of 24×n keeps the day's total where the legacy limit held it.
func (l *legacyLimits) setHourlyRate(n int) {
	l.perMinute = (n + 59) / 60
	l.burst = l.perMinute
	l.comment = fmt.Sprintf("%d messages an hour in accounts.json: %d a minute, at most %d at once", n, l.perMinute, l.burst)
	if n < 60 {
		l.daily = 24 * n
		l.comment += fmt.Sprintf(", %d a day", l.daily)
	}
}

// pickLegacyLimit returns the limit an account sets in the flat or the
// nested layout, 0 when none: the lower one when both are set, since the
// legacy proxy was held to both. Values that are not imported are warned.
func pickLegacyLimit(label string, warn func(string), flatName string, flat *int, nestedName string, nested *int) int {
	var names []string
	var values []int
	for _, c := range []struct {
		name  string
		value *int
	}{{flatName, flat}, {nestedName, nested}} {
		switch {
		case c.value == nil:
		case *c.value <= 0:
			warn(fmt.Sprintf("account %s: %s is %d; not imported (the provider's default applies)", label, c.name, *c.value))
		default:
			names, values = append(names, c.name), append(values, *c.value)
		}
	}
	switch {
	case len(values) == 0:
		return 0
	case len(values) == 2 && values[0] != values[1]:
		warn(fmt.Sprintf("account %s: %s (%d) and %s (%d) differ; only the lower is imported", label, names[0], values[0], names[1], values[1]))
	}
	return slices.Min(values)
}

// write sets the limits on an account block.
func (l legacyLimits) write(b *hclwrite.Body) {
	if l.comment != "" {
		b.AppendUnstructuredTokens(hclwrite.Tokens{{Type: hclsyntax.TokenComment, Bytes: []byte("# " + l.comment + "\n")}})
	}
	for _, attr := range []struct {
		name  string
		value int
	}{
		{"rate_limit_per_minute", l.perMinute},
		{"rate_limit_burst", l.burst},
		{"daily_message_limit", l.daily},
		{"max_connections", l.maxConnections},
	} {
		if attr.value > 0 {
			b.SetAttributeValue(attr.name, cty.NumberIntVal(int64(attr.value)))
		}
	}
}

func groupLegacy(accounts []legacyAccount, warn func(string)) ([]*legacyGroup, error) {
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
		a.limits = mapLegacyLimits(a, provider, warn)
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
			a.limits.write(ab)
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
