package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/oauthrelay/oauthrelay/internal/netset"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
)

// Protocol constants of the two big providers (README "Setting up Google
// Workspace / Gmail" and "Setting up Microsoft 365").
const (
	GoogleTokenURL        = "https://oauth2.googleapis.com/token"
	GoogleSMTPAddress     = "smtp.gmail.com:587"
	GoogleScope           = "https://mail.google.com/"
	MicrosoftTokenURLFmt  = "https://login.microsoftonline.com/%s/oauth2/v2.0/token"
	MicrosoftSMTPAddress  = "smtp.office365.com:587"
	MicrosoftSMTPScope    = "https://outlook.office.com/SMTP.Send"
	MicrosoftAppOnlyScope = "https://outlook.office365.com/.default"
	GoogleAuthURL         = "https://accounts.google.com/o/oauth2/v2/auth"
	MicrosoftAuthURLFmt   = "https://login.microsoftonline.com/%s/oauth2/v2.0/authorize"
	MicrosoftDeviceURLFmt = "https://login.microsoftonline.com/%s/oauth2/v2.0/devicecode"
)

// presetScopes are the scopes each preset requests per flow; a flow absent
// from a preset's map is not offered by that provider.
var presetScopes = map[string]map[string][]string{
	PresetGoogle: {
		FlowRefreshToken:   {GoogleScope},
		FlowServiceAccount: {GoogleScope},
	},
	PresetMicrosoft: {
		FlowRefreshToken:      {MicrosoftSMTPScope, "offline_access"},
		FlowClientCredentials: {MicrosoftAppOnlyScope},
	},
	PresetCustom: {
		FlowRefreshToken:      nil,
		FlowClientCredentials: nil,
		FlowServiceAccount:    nil,
	},
}

// rawLimits are the limit attributes of providers and accounts; nil means
// not set (inherit), 0 means no limit.
type rawLimits struct {
	RateLimitPerMinute      *int `hcl:"rate_limit_per_minute,optional"`
	RateLimitBurst          *int `hcl:"rate_limit_burst,optional"`
	DailyMessageLimit       *int `hcl:"daily_message_limit,optional"`
	DailyRecipientLimit     *int `hcl:"daily_recipient_limit,optional"`
	MaxRecipientsPerMessage *int `hcl:"max_recipients_per_message,optional"`
}

// apply overlays the set values of r on base.
func (d *decoder) applyLimits(body hcl.Body, r rawLimits, base Limits, def hcl.Range) Limits {
	set := func(name string, v *int, dst *int) {
		if v != nil {
			*dst = d.nonNegative(body, name, *v, def)
		}
	}
	set("rate_limit_per_minute", r.RateLimitPerMinute, &base.RateLimitPerMinute)
	set("rate_limit_burst", r.RateLimitBurst, &base.RateLimitBurst)
	set("daily_message_limit", r.DailyMessageLimit, &base.DailyMessageLimit)
	set("daily_recipient_limit", r.DailyRecipientLimit, &base.DailyRecipientLimit)
	set("max_recipients_per_message", r.MaxRecipientsPerMessage, &base.MaxRecipientsPerMessage)
	return base
}

// presetLimits are the providers' documented sending limits (README
// "Protection", sending limits), applied unless configured otherwise.
var presetLimits = map[string]Limits{
	PresetGoogle:    {DailyMessageLimit: 2000, MaxRecipientsPerMessage: 100},
	PresetMicrosoft: {RateLimitPerMinute: 30, DailyRecipientLimit: 10000},
}

// presetPools: Microsoft refuses a 4th concurrent connection per mailbox
// (432 4.3.2).
var presetPools = map[string]PoolConfig{
	PresetGoogle:    {MaxConnections: 10, MaxMessagesPerConnection: 100},
	PresetMicrosoft: {MaxConnections: 3, MaxMessagesPerConnection: 100},
	PresetCustom:    {MaxConnections: 10, MaxMessagesPerConnection: 100},
}

type rawProvider struct {
	Preset         string   `hcl:"preset"`
	Tenant         string   `hcl:"tenant,optional"`
	TokenURL       string   `hcl:"token_url,optional"`
	AuthURL        string   `hcl:"auth_url,optional"`
	DeviceCodeURL  string   `hcl:"device_code_url,optional"`
	SMTPAddress    string   `hcl:"smtp_address,optional"`
	SMTPTLS        string   `hcl:"smtp_tls,optional"`
	TLSServerName  string   `hcl:"tls_server_name,optional"`
	CAFile         string   `hcl:"ca_file,optional"`
	Scopes         []string `hcl:"scopes,optional"`
	AuthMechanism  string   `hcl:"auth_mechanism,optional"`
	ConnectTimeout string   `hcl:"connect_timeout,optional"`
	CommandTimeout string   `hcl:"command_timeout,optional"`
	TokenTimeout   string   `hcl:"token_timeout,optional"`
	Transport      string   `hcl:"transport,optional"`
	GraphURL       string   `hcl:"graph_url,optional"`
	GmailAPIURL    string   `hcl:"gmail_api_url,optional"`

	MaxConnections           *int     `hcl:"max_connections,optional"`
	MaxMessagesPerConnection *int     `hcl:"max_messages_per_connection,optional"`
	ConnectionIdleTimeout    string   `hcl:"connection_idle_timeout,optional"`
	ConnectionMaxAge         string   `hcl:"connection_max_age,optional"`
	ConnectionWaitTimeout    string   `hcl:"connection_wait_timeout,optional"`
	CircuitFailureThreshold  *int     `hcl:"circuit_failure_threshold,optional"`
	CircuitOpenTimeout       string   `hcl:"circuit_open_timeout,optional"`
	CircuitWindow            string   `hcl:"circuit_window,optional"`
	CircuitMinRequests       *int     `hcl:"circuit_min_requests,optional"`
	CircuitFailureRatio      *float64 `hcl:"circuit_failure_ratio,optional"`

	RateLimitPerMinute      *int `hcl:"rate_limit_per_minute,optional"`
	RateLimitBurst          *int `hcl:"rate_limit_burst,optional"`
	DailyMessageLimit       *int `hcl:"daily_message_limit,optional"`
	DailyRecipientLimit     *int `hcl:"daily_recipient_limit,optional"`
	MaxRecipientsPerMessage *int `hcl:"max_recipients_per_message,optional"`
}

func (r rawProvider) limits() rawLimits {
	return rawLimits{r.RateLimitPerMinute, r.RateLimitBurst, r.DailyMessageLimit, r.DailyRecipientLimit, r.MaxRecipientsPerMessage}
}

func (d *decoder) provider(b *hcl.Block) *Provider {
	var raw rawProvider
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	body, def := b.Body, b.DefRange
	p := &Provider{
		Name:          b.Labels[0],
		Preset:        strings.ToLower(raw.Preset),
		Tenant:        raw.Tenant,
		TokenURL:      raw.TokenURL,
		AuthURL:       raw.AuthURL,
		DeviceCodeURL: raw.DeviceCodeURL,
		SMTPAddress:   raw.SMTPAddress,
		SMTPTLS:       strings.ToLower(raw.SMTPTLS),
		TLSServerName: raw.TLSServerName,
		CAFile:        raw.CAFile,
		Scopes:        raw.Scopes,
		AuthMechanism: strings.ToUpper(raw.AuthMechanism),
		DefRange:      def,
	}
	p.ConnectTimeout = d.duration(body, "connect_timeout", raw.ConnectTimeout, def, DefaultConnectTimeout)
	p.CommandTimeout = d.duration(body, "command_timeout", raw.CommandTimeout, def, DefaultCommandTimeout)
	p.TokenTimeout = d.duration(body, "token_timeout", raw.TokenTimeout, def, DefaultTokenTimeout)
	if !d.preset(body, p.Name, p.Preset, def) {
		return nil
	}
	switch p.Preset {
	case PresetGoogle:
		if p.TokenURL == "" {
			p.TokenURL = GoogleTokenURL
		}
		if p.SMTPAddress == "" {
			p.SMTPAddress = GoogleSMTPAddress
		}
		if p.AuthURL == "" {
			p.AuthURL = GoogleAuthURL
		}
		if hasAttr(body, "tenant") {
			d.errorf(attrRange(body, "tenant", def), "Unexpected attribute", "tenant only applies to preset = \"microsoft\".")
		}
	case PresetMicrosoft:
		if p.TokenURL == "" {
			if p.Tenant == "" {
				d.errorf(def, "Missing tenant", "Provider %q with preset = \"microsoft\" needs tenant (the directory ID or a verified domain of the Microsoft 365 tenant).", p.Name)
			} else {
				p.TokenURL = fmt.Sprintf(MicrosoftTokenURLFmt, url.PathEscape(p.Tenant))
			}
		}
		if p.Tenant != "" {
			if p.AuthURL == "" {
				p.AuthURL = fmt.Sprintf(MicrosoftAuthURLFmt, url.PathEscape(p.Tenant))
			}
			if p.DeviceCodeURL == "" {
				p.DeviceCodeURL = fmt.Sprintf(MicrosoftDeviceURLFmt, url.PathEscape(p.Tenant))
			}
		}
		if p.SMTPAddress == "" {
			p.SMTPAddress = MicrosoftSMTPAddress
		}
	case PresetCustom:
		if p.TokenURL == "" {
			d.errorf(def, "Missing required argument", "Provider %q with preset = \"custom\" needs token_url.", p.Name)
		}
		if p.SMTPAddress == "" && (raw.Transport == "" || raw.Transport == TransportSMTP) {
			d.errorf(def, "Missing required argument", "Provider %q with preset = \"custom\" needs smtp_address.", p.Name)
		}
	}
	if p.SMTPTLS == "" {
		p.SMTPTLS = TLSStartTLS
	}
	p.Pool = presetPools[p.Preset]
	d.providerTransport(p, raw, body, def)
	d.oneOf(body, "smtp_tls", p.SMTPTLS, def, TLSStartTLS, TLSImplicit)
	if p.AuthMechanism == "" {
		p.AuthMechanism = MechXOAUTH2
	}
	if !d.oneOf(body, "auth_mechanism", p.AuthMechanism, def, MechXOAUTH2, MechOAUTHBEARER) {
		p.AuthMechanism = MechXOAUTH2
	}
	if p.SMTPAddress != "" {
		d.hostPort(body, "smtp_address", p.SMTPAddress, def)
	}
	if p.TokenURL != "" {
		d.tokenURL(body, "token_url", p.TokenURL, def)
	}
	if raw.AuthURL != "" {
		d.tokenURL(body, "auth_url", p.AuthURL, def)
	}
	if raw.DeviceCodeURL != "" {
		d.tokenURL(body, "device_code_url", p.DeviceCodeURL, def)
	}
	if p.CAFile != "" {
		d.caFile(body, "ca_file", p.CAFile, def)
	}
	p.Limits = d.applyLimits(body, raw.limits(), presetLimits[p.Preset], def)
	if raw.MaxConnections != nil {
		p.Pool.MaxConnections = d.nonNegative(body, "max_connections", *raw.MaxConnections, def)
	}
	if raw.MaxMessagesPerConnection != nil {
		p.Pool.MaxMessagesPerConnection = d.nonNegative(body, "max_messages_per_connection", *raw.MaxMessagesPerConnection, def)
	}
	p.Pool.IdleTimeout = d.duration(body, "connection_idle_timeout", raw.ConnectionIdleTimeout, def, DefaultConnectionIdleTimeout)
	p.Pool.MaxAge = d.duration(body, "connection_max_age", raw.ConnectionMaxAge, def, DefaultConnectionMaxAge)
	p.Pool.WaitTimeout = d.duration(body, "connection_wait_timeout", raw.ConnectionWaitTimeout, def, DefaultConnectionWaitTimeout)
	p.Circuit = CircuitConfig{FailureThreshold: DefaultCircuitFailureThreshold}
	if raw.CircuitFailureThreshold != nil {
		if *raw.CircuitFailureThreshold < 1 {
			d.errorf(attrRange(body, "circuit_failure_threshold", def), "Invalid value", "circuit_failure_threshold must be at least 1.")
		} else {
			p.Circuit.FailureThreshold = *raw.CircuitFailureThreshold
		}
	}
	p.Circuit.OpenTimeout = d.duration(body, "circuit_open_timeout", raw.CircuitOpenTimeout, def, DefaultCircuitOpenTimeout)
	p.Circuit.Window = d.duration(body, "circuit_window", raw.CircuitWindow, def, DefaultCircuitWindow)
	p.Circuit.MinRequests, p.Circuit.FailureRatio = DefaultCircuitMinRequests, DefaultCircuitFailureRatio
	if raw.CircuitMinRequests != nil {
		if *raw.CircuitMinRequests < 1 {
			d.errorf(attrRange(body, "circuit_min_requests", def), "Invalid value", "circuit_min_requests must be at least 1.")
		} else {
			p.Circuit.MinRequests = *raw.CircuitMinRequests
		}
	}
	if raw.CircuitFailureRatio != nil {
		if r := *raw.CircuitFailureRatio; r <= 0 || r > 1 {
			d.errorf(attrRange(body, "circuit_failure_ratio", def), "Invalid value", "circuit_failure_ratio must be greater than 0 and at most 1, such as 0.5.")
		} else {
			p.Circuit.FailureRatio = r
		}
	}
	return p
}

// presetSuggestions map names operators plausibly write for a preset
// (lower case, without spaces, hyphens or underscores) to the preset.
var presetSuggestions = map[string]string{
	"gmail": PresetGoogle, "gsuite": PresetGoogle, "workspace": PresetGoogle, "googleworkspace": PresetGoogle, "googlemail": PresetGoogle,
	"outlook": PresetMicrosoft, "office365": PresetMicrosoft, "o365": PresetMicrosoft, "m365": PresetMicrosoft,
	"microsoft365": PresetMicrosoft, "exchange": PresetMicrosoft, "azure": PresetMicrosoft, "entra": PresetMicrosoft,
}

// preset checks a provider's preset. An invalid one is reported once,
// here, with a suggestion where the intent is clear; the provider is then
// remembered as bad so that groups referring to it stay quiet about it.
func (d *decoder) preset(body hcl.Body, name, preset string, def hcl.Range) bool {
	switch preset {
	case PresetGoogle, PresetMicrosoft, PresetCustom:
		return true
	}
	hint := ""
	if s, ok := presetSuggestions[strings.NewReplacer("-", "", " ", "", "_", "").Replace(preset)]; ok {
		hint = fmt.Sprintf(" Did you mean %q?", s)
	}
	d.errorf(attrRange(body, "preset", def), "Invalid preset", "preset must be one of %s; got %q.%s", quoteList([]string{PresetGoogle, PresetMicrosoft, PresetCustom}), preset, hint)
	if d.badProviders == nil {
		d.badProviders = map[string]bool{}
	}
	d.badProviders[name] = true
	return false
}

// tokenURL requires https, except on loopback where a local test or
// development endpoint may speak plain http.
func (d *decoder) tokenURL(body hcl.Body, name, raw string, def hcl.Range) {
	u, err := url.Parse(raw)
	ok := err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http" && IsLoopbackHost(u.Hostname()))
	if !ok {
		d.errorf(attrRange(body, name, def), "Invalid "+name, "%s must be an https URL (plain http only on loopback); got %q.", name, raw)
	}
}

type rawAccount struct {
	Address                 string   `hcl:"address,label"`
	RefreshToken            *string  `hcl:"refresh_token,optional"`
	RateLimitPerMinute      *int     `hcl:"rate_limit_per_minute,optional"`
	RateLimitBurst          *int     `hcl:"rate_limit_burst,optional"`
	DailyMessageLimit       *int     `hcl:"daily_message_limit,optional"`
	DailyRecipientLimit     *int     `hcl:"daily_recipient_limit,optional"`
	MaxRecipientsPerMessage *int     `hcl:"max_recipients_per_message,optional"`
	MaxConnections          *int     `hcl:"max_connections,optional"`
	MaxMailboxes            *int     `hcl:"max_mailboxes,optional"`
	Body                    hcl.Body `hcl:",body"`
}

type rawClient struct {
	Name           string   `hcl:"name,label"`
	PasswordHash   *string  `hcl:"password_hash,optional"`
	AllowedSenders []string `hcl:"allowed_senders,optional"`
	Networks       []string `hcl:"networks,optional"`
	SendAs         *string  `hcl:"send_as,optional"`
	Body           hcl.Body `hcl:",body"`
}

type rawGroup struct {
	Provider            string       `hcl:"provider"`
	Flow                string       `hcl:"flow,optional"`
	ClientID            string       `hcl:"client_id,optional"`
	ClientSecret        *string      `hcl:"client_secret,optional"`
	ServiceAccountKey   *string      `hcl:"service_account_key,optional"`
	ClientCertificate   *string      `hcl:"client_certificate,optional"`
	ClientPrivateKey    *string      `hcl:"client_private_key,optional"`
	RefreshBeforeExpiry string       `hcl:"refresh_before_expiry,optional"`
	TokenErrorBackoff   string       `hcl:"token_error_backoff,optional"`
	WriteBack           *bool        `hcl:"write_back,optional"`
	Accounts            []rawAccount `hcl:"account,block"`
	Clients             []rawClient  `hcl:"client,block"`
}

func (d *decoder) group(b *hcl.Block, providers map[string]*Provider, accountsSeen, clientsSeen map[string]hcl.Range) *AccountGroup {
	var raw rawGroup
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	body, def := b.Body, b.DefRange
	g := &AccountGroup{
		Name:         b.Labels[0],
		ProviderName: raw.Provider,
		Flow:         strings.ToLower(raw.Flow),
		ClientID:     raw.ClientID,
		WriteBack:    raw.WriteBack == nil || *raw.WriteBack,
		DefRange:     def,
	}
	if g.Flow == "" {
		g.Flow = FlowRefreshToken
	}
	g.RefreshBeforeExpiry = d.duration(body, "refresh_before_expiry", raw.RefreshBeforeExpiry, def, DefaultRefreshBeforeExpiry)
	g.TokenErrorBackoff = d.duration(body, "token_error_backoff", raw.TokenErrorBackoff, def, DefaultTokenErrorBackoff)
	g.ClientSecret = d.secret(body, "client_secret", raw.ClientSecret, def)
	g.ServiceAccountKey = d.secret(body, "service_account_key", raw.ServiceAccountKey, def)
	g.ClientCertificate = d.secret(body, "client_certificate", raw.ClientCertificate, def)
	g.ClientPrivateKey = d.secret(body, "client_private_key", raw.ClientPrivateKey, def)

	flowOK := d.oneOf(body, "flow", g.Flow, def, FlowRefreshToken, FlowClientCredentials, FlowServiceAccount)
	p, ok := providers[g.ProviderName]
	switch {
	case d.badProviders[g.ProviderName]:
		// Already reported at the provider block.
	case !ok:
		d.errorf(attrRange(body, "provider", def), "Unknown provider", "Account group %q refers to provider %q, which is not declared%s.", g.Name, g.ProviderName, declaredNames(providers))
	case flowOK:
		g.Provider = p
		scopes, offered := presetScopes[p.Preset][g.Flow]
		if ts, ok := transportScopes(p, g.Flow); ok {
			scopes = ts
		}
		if !offered {
			d.errorf(attrRange(body, "flow", def), "Flow not offered by provider", "Provider %q (preset %q) does not support flow = %q.", p.Name, p.Preset, g.Flow)
		}
		g.Scopes = scopes
		if p.Scopes != nil {
			g.Scopes = p.Scopes
		}
	}
	if flowOK {
		d.groupCredentials(g, body, def)
	}

	accountRanges := nestedBlockRanges(body, "account")
	for i, ra := range raw.Accounts {
		if a := d.account(g, ra, accountRanges[i], accountsSeen); a != nil {
			g.Accounts = append(g.Accounts, a)
		}
	}
	clientRanges := nestedBlockRanges(body, "client")
	for i, rc := range raw.Clients {
		if c := d.client(g, rc, clientRanges[i], clientsSeen); c != nil {
			g.Clients = append(g.Clients, c)
		}
	}
	return g
}

// groupCredentials checks that the group carries exactly the credentials
// its flow uses.
func (d *decoder) groupCredentials(g *AccountGroup, body hcl.Body, def hcl.Range) {
	need := func(name string, set bool) {
		if !set {
			d.errorf(def, "Missing required argument", "Account group %q with flow = %q needs %s.", g.Name, g.Flow, name)
		}
	}
	forbid := func(name string) {
		if hasAttr(body, name) {
			d.errorf(attrRange(body, name, def), "Unexpected attribute", "%s is not used with flow = %q.", name, g.Flow)
		}
	}
	switch g.Flow {
	case FlowRefreshToken:
		need("client_id", g.ClientID != "")
		forbid("service_account_key")
		d.certificateCredential(g, body, def)
	case FlowClientCredentials:
		need("client_id", g.ClientID != "")
		if d.certificateCredential(g, body, def) == certAbsent {
			need("client_secret (or client_certificate with client_private_key)", g.ClientSecret.IsSet())
		}
		forbid("service_account_key")
	case FlowServiceAccount:
		need("service_account_key", g.ServiceAccountKey.IsSet())
		forbid("client_secret")
		forbid("client_certificate")
		forbid("client_private_key")
	}
}

// certPresence says whether a group authenticates with a certificate.
type certPresence int

const (
	certAbsent  certPresence = iota // neither attribute
	certPresent                     // both, or a mistake already reported
)

// certificateCredential checks client_certificate and client_private_key,
// the certificate credential of an Entra application (README "Setting up
// Microsoft 365"): both or neither, instead of client_secret, and not with
// Google, whose OAuth clients authenticate with a client secret only.
func (d *decoder) certificateCredential(g *AccountGroup, body hcl.Body, def hcl.Range) certPresence {
	cert, key := hasAttr(body, "client_certificate"), hasAttr(body, "client_private_key")
	if !cert && !key {
		return certAbsent
	}
	first := "client_certificate"
	if !cert {
		first = "client_private_key"
	}
	rng := attrRange(body, first, def)
	switch {
	case !cert:
		d.errorf(rng, "Missing client_certificate", "Account group %q sets client_private_key but not client_certificate: the certificate (PEM) whose public key matches the key, as uploaded to the application's registration, is needed too.", g.Name)
	case !key:
		d.errorf(rng, "Missing client_private_key", "Account group %q sets client_certificate but not client_private_key: the certificate's RSA private key (PEM, PKCS#1 or PKCS#8) is needed to sign the client assertions.", g.Name)
	}
	if hasAttr(body, "client_secret") {
		d.errorf(attrRange(body, "client_secret", def), "Conflicting credentials", "Account group %q sets both client_secret and a client certificate; an application authenticates with one of them: remove client_secret or client_certificate and client_private_key.", g.Name)
	}
	if g.Provider != nil && g.Provider.Preset == PresetGoogle {
		d.errorf(rng, "Certificate credentials not supported by provider", "Provider %q (preset \"google\"): Google OAuth clients authenticate with client_secret only and accept no client assertion; client_certificate and client_private_key are for Microsoft Entra applications (preset \"microsoft\") and custom providers that accept RFC 7523 client assertions.", g.Provider.Name)
	}
	return certPresent
}

func (d *decoder) account(g *AccountGroup, ra rawAccount, labelRange hcl.Range, seen map[string]hcl.Range) *Account {
	addr := strings.ToLower(strings.TrimSpace(ra.Address))
	domain, isDomain := domainPattern(addr)
	if !isDomain && (!validAddress(addr) || strings.HasPrefix(addr, "*@")) {
		d.errorf(labelRange, "Invalid account address", "%q is not a mailbox address such as \"invoices@example.com\", nor a domain-wide account such as \"*@example.com\".", ra.Address)
		return nil
	}
	if first, ok := seen[addr]; ok {
		d.errorf(labelRange, "Duplicate account", "The account %q is already declared at %s; an address can belong to one group only.", addr, first)
		return nil
	}
	seen[addr] = labelRange
	a := &Account{
		Address:      addr,
		Group:        g,
		RefreshToken: d.secret(ra.Body, "refresh_token", ra.RefreshToken, labelRange),
		DefRange:     labelRange,
	}
	if isDomain {
		a.Domain = domain
	}
	d.domainAccount(g, a, ra, labelRange)
	var base Limits
	if g.Provider != nil {
		base = g.Provider.Limits
		a.MaxConnections = g.Provider.Pool.MaxConnections
	}
	a.Limits = d.applyLimits(ra.Body, rawLimits{ra.RateLimitPerMinute, ra.RateLimitBurst, ra.DailyMessageLimit, ra.DailyRecipientLimit, ra.MaxRecipientsPerMessage}, base, labelRange)
	if ra.MaxConnections != nil {
		a.MaxConnections = d.nonNegative(ra.Body, "max_connections", *ra.MaxConnections, labelRange)
	}
	switch g.Flow {
	case FlowRefreshToken:
		if ra.RefreshToken == nil && !a.IsDomain() {
			d.errorf(labelRange, "Missing required argument", "Account %q needs refresh_token (group %q uses flow = \"refresh_token\").", addr, g.Name)
		}
	case FlowClientCredentials, FlowServiceAccount:
		if ra.RefreshToken != nil {
			d.errorf(attrRange(ra.Body, "refresh_token", labelRange), "Unexpected attribute", "refresh_token is not used with flow = %q.", g.Flow)
		}
	}
	return a
}

func (d *decoder) client(g *AccountGroup, rc rawClient, labelRange hcl.Range, seen map[string]hcl.Range) *Client {
	if first, ok := seen[rc.Name]; ok {
		d.errorf(labelRange, "Duplicate client", "A client named %q is already declared at %s; client names are SMTP AUTH usernames and must be unique.", rc.Name, first)
		return nil
	}
	if rc.Name == "" || strings.ContainsAny(rc.Name, " \t\r\n\x00") {
		d.errorf(labelRange, "Invalid client name", "A client name is its SMTP AUTH username: it must be non-empty and contain no spaces or control characters.")
		return nil
	}
	seen[rc.Name] = labelRange
	c := &Client{Name: rc.Name, Group: g, DefRange: labelRange}
	c.Networks = d.clientNetworks(rc, labelRange)
	switch {
	case rc.PasswordHash != nil:
		c.PasswordHash = *rc.PasswordHash
		if err := passwd.CheckHash(c.PasswordHash); err != nil {
			d.errorf(attrRange(rc.Body, "password_hash", labelRange), "Invalid password_hash", "Client %q: %v. Create one with `oauthrelay hash-password`.", rc.Name, err)
		}
	case rc.Networks == nil:
		d.errorf(labelRange, "Client cannot be recognised", "Client %q needs password_hash (it authenticates with SMTP AUTH), networks (hosts of these networks are this client without AUTH), or both. Create a hash with `oauthrelay hash-password`.", rc.Name)
	}
	c.AllowedSenders = d.allowedSenders(g, rc, labelRange)
	if rc.AllowedSenders != nil {
		c.AllowedSendersRange = attrRange(rc.Body, "allowed_senders", labelRange)
	}
	if rc.SendAs != nil {
		c.SendAsRange = attrRange(rc.Body, "send_as", labelRange)
		c.SendAs = d.sendAs(g, c, rc, labelRange)
	}
	if rc.Networks != nil && rc.AllowedSenders == nil && rc.SendAs == nil {
		// Every host of the networks is this client without a password:
		// the AUTH clients' default, every account of the group, would let
		// any of them send as any account (README "Devices").
		d.errorf(labelRange, "Network client without senders", "Client %q is identified by its networks, whose hosts send without a password, and would send as every account of group %q: a client identified by network must name its senders: set allowed_senders or send_as.", rc.Name, g.Name)
	}
	return c
}

// allowedSenders returns the addresses a client may send as: the listed
// ones, each an account of the group, an address of one of its
// domain-wide accounts or such an account's "*@domain"; by default every
// account of the group.
func (d *decoder) allowedSenders(g *AccountGroup, rc rawClient, labelRange hcl.Range) []string {
	var out []string
	if rc.AllowedSenders == nil {
		for _, a := range g.Accounts {
			out = append(out, a.Address)
		}
		return out
	}
	rng := attrRange(rc.Body, "allowed_senders", labelRange)
	if len(rc.AllowedSenders) == 0 {
		d.errorf(rng, "Empty allowed_senders", "Client %q may send as nobody; remove allowed_senders to allow every account of group %q.", rc.Name, g.Name)
	}
	for _, s := range rc.AllowedSenders {
		addr := strings.ToLower(strings.TrimSpace(s))
		if _, pattern := domainPattern(addr); !pattern && !validAddress(addr) {
			d.errorf(rng, "Invalid sender", "Client %q: %q in allowed_senders is not a mailbox address such as \"scans@example.com\", nor a domain-wide account's \"*@example.com\".", rc.Name, s)
			continue
		}
		if g.Account(addr) == nil {
			d.errorf(rng, "Sender is not an account of the group", "Client %q may send as %q, which is not an account of group %q (nor an address of one of its domain-wide accounts); the relay can only send as the group's own accounts.", rc.Name, s, g.Name)
			continue
		}
		out = append(out, addr)
	}
	return out
}

// sendAs checks a client's send_as: a mailbox the client may send as.
func (d *decoder) sendAs(g *AccountGroup, c *Client, rc rawClient, labelRange hcl.Range) string {
	rng := attrRange(rc.Body, "send_as", labelRange)
	addr := strings.ToLower(strings.TrimSpace(*rc.SendAs))
	if !validAddress(addr) || strings.HasPrefix(addr, "*@") {
		d.errorf(rng, "Invalid send_as", "Client %q: send_as must be a mailbox address such as \"scans@example.com\"; got %q.", rc.Name, *rc.SendAs)
		return ""
	}
	if c.MaySendAs(addr) {
		return addr
	}
	if g.Account(addr) != nil {
		d.errorf(rng, "send_as is not an allowed sender", "Client %q sends as %q, which is not among its allowed_senders; add it there or remove allowed_senders.", rc.Name, addr)
		return ""
	}
	d.errorf(rng, "send_as is not an account of the group", "Client %q sends as %q, which is not an account of group %q; the relay can only send as the group's own accounts.", rc.Name, addr, g.Name)
	return ""
}

// MaySendAs reports whether the client's allowed senders include addr
// (lower case): by address, or by a domain-wide "*@domain" when addr is
// not declared as an account of its own.
func (c *Client) MaySendAs(addr string) bool {
	if strings.HasPrefix(addr, "*@") {
		return false // the pattern, not a mailbox
	}
	for _, s := range c.AllowedSenders {
		if s == addr {
			return true
		}
	}
	if c.Group != nil {
		if a := c.Group.Account(addr); a != nil && !a.IsDomain() {
			// An account of its own is not one of the domain-wide
			// account's mailboxes: it must be named (as the relay
			// decides at MAIL).
			return false
		}
	}
	for _, s := range c.AllowedSenders {
		if domain, ok := strings.CutPrefix(s, "*@"); ok && strings.HasSuffix(addr, "@"+domain) {
			return true
		}
	}
	return false
}

// clientNetworks parses a client's networks; each problem points at the
// entry that has it.
func (d *decoder) clientNetworks(rc rawClient, labelRange hcl.Range) []ClientNetwork {
	if rc.Networks == nil {
		return nil
	}
	ranges := listItemRanges(rc.Body, "networks", labelRange, len(rc.Networks))
	if len(rc.Networks) == 0 {
		d.errorf(ranges.whole, "Empty networks", "Client %q lists no network; remove networks or name at least one, such as \"10.20.0.0/24\".", rc.Name)
	}
	var out []ClientNetwork
	seen := map[netip.Prefix]bool{}
	for i, s := range rc.Networks {
		rng := ranges.items[i]
		p, err := netset.Parse(s)
		if err != nil {
			d.errorf(rng, "Invalid network", "Client %q: %s", rc.Name, sentence(err))
			continue
		}
		if seen[p] {
			d.warnf(rng, "Duplicate network", "Client %q lists %s twice.", rc.Name, p)
			continue
		}
		seen[p] = true
		out = append(out, ClientNetwork{Prefix: p, Range: rng})
	}
	return out
}

func declaredNames(m map[string]*Provider) string {
	if len(m) == 0 {
		return " (no provider block exists)"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	return "; declared: " + strings.Join(names, ", ")
}

// sentence ends an error's text as a sentence.
func sentence(err error) string {
	s := err.Error()
	if strings.HasSuffix(s, ".") || strings.HasSuffix(s, "?") {
		return s
	}
	return s + "."
}
