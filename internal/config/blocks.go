package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
)

// Defaults that are not provider specific.
const (
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultRetiredSessionTimeout is how long a session opened before a
	// reload may go on idling before it is asked to reconnect.
	DefaultRetiredSessionTimeout = time.Minute
	// DefaultMaxLineLength bounds one line of a message (and of a command).
	// RFC 5322 allows 998 characters, but HTML mail without line breaks is
	// common and providers accept it.
	DefaultMaxLineLength = 1 << 20
	// DefaultMessageMemoryLimit is the memory all messages being relayed
	// may hold together; beyond it they spill to encrypted files.
	DefaultMessageMemoryLimit  = 128 << 20
	DefaultMaxMessageSize      = 35_000_000
	DefaultMaxRecipients       = 100
	DefaultReadTimeout         = 5 * time.Minute
	DefaultWriteTimeout        = time.Minute
	DefaultRefreshBeforeExpiry = 5 * time.Minute
	DefaultTokenErrorBackoff   = time.Minute
	DefaultConnectTimeout      = 30 * time.Second
	DefaultCommandTimeout      = 5 * time.Minute
	DefaultTokenTimeout        = 30 * time.Second
	DefaultVaultPollInterval   = 30 * time.Second

	DefaultConnectionIdleTimeout   = 60 * time.Second
	DefaultConnectionMaxAge        = 10 * time.Minute
	DefaultConnectionWaitTimeout   = 30 * time.Second
	DefaultCircuitFailureThreshold = 5
	DefaultCircuitOpenTimeout      = 30 * time.Second
	DefaultCircuitWindow           = time.Minute
	DefaultCircuitMinRequests      = 20
	DefaultCircuitFailureRatio     = 0.5
	DefaultMaxConnectionsPerIP     = 50
	DefaultMaxAuthFailures         = 5
	DefaultAuthFailureWindow       = 15 * time.Minute
)

type rawServer struct {
	Hostname          string         `hcl:"hostname,optional"`
	LogLevel          string         `hcl:"log_level,optional"`
	LogFormat         string         `hcl:"log_format,optional"`
	ShutdownTimeout   string         `hcl:"shutdown_timeout,optional"`
	WatchConfig       bool           `hcl:"watch_config,optional"`
	GlobalConcurrency int            `hcl:"global_concurrency,optional"`
	RetiredSession    string         `hcl:"retired_session_timeout,optional"`
	MessageMemory     hcl.Expression `hcl:"message_memory_limit,optional"`
	SpillToDisk       *bool          `hcl:"spill_to_disk,optional"`
	SpoolDir          string         `hcl:"spool_dir,optional"`
	ReceivedHide      bool           `hcl:"received_hide_client,optional"`
}

func (d *decoder) server(b *hcl.Block, ov Overrides) Server {
	var raw rawServer
	var body hcl.Body
	rng := hcl.Range{}
	if b != nil {
		body, rng = b.Body, b.DefRange
		d.diags = append(d.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	}
	s := Server{
		Hostname:          raw.Hostname,
		LogLevel:          strings.ToLower(raw.LogLevel),
		LogFormat:         strings.ToLower(raw.LogFormat),
		WatchConfig:       raw.WatchConfig,
		GlobalConcurrency: d.nonNegative(body, "global_concurrency", raw.GlobalConcurrency, rng),
		DryRun:            ov.DryRun,
	}
	s.ShutdownTimeout = d.duration(body, "shutdown_timeout", raw.ShutdownTimeout, rng, DefaultShutdownTimeout)
	s.RetiredSessionTimeout = d.duration(body, "retired_session_timeout", raw.RetiredSession, rng, DefaultRetiredSessionTimeout)
	s.ReceivedHideClient = raw.ReceivedHide
	s.MessageMemoryLimit = d.size(raw.MessageMemory, "message_memory_limit", DefaultMessageMemoryLimit)
	s.SpillToDisk = raw.SpillToDisk == nil || *raw.SpillToDisk
	s.SpoolDir = raw.SpoolDir
	if s.SpoolDir != "" && !filepath.IsAbs(s.SpoolDir) {
		d.errorf(attrRange(body, "spool_dir", rng), "Invalid spool_dir", "spool_dir must be an absolute path; got %q.", s.SpoolDir)
	}
	if s.Hostname == "" {
		s.Hostname, _ = os.Hostname()
		if s.Hostname == "" {
			s.Hostname = "localhost"
		}
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	d.oneOf(body, "log_level", s.LogLevel, rng, "trace", "debug", "info", "warn", "error")
	if s.LogFormat == "" {
		s.LogFormat = "text"
	}
	d.oneOf(body, "log_format", s.LogFormat, rng, "text", "json")
	if ov.GlobalConcurrency > 0 {
		s.GlobalConcurrency = ov.GlobalConcurrency
	}
	return s
}

type rawTelemetry struct {
	Address                  string `hcl:"address,optional"`
	ReadyRequiresAllAccounts bool   `hcl:"ready_requires_all_accounts,optional"`
}

func (d *decoder) telemetry(b *hcl.Block) Telemetry {
	if b == nil {
		return Telemetry{}
	}
	var raw rawTelemetry
	d.diags = append(d.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	if raw.Address != "" {
		d.hostPort(b.Body, "address", raw.Address, b.DefRange)
	}
	return Telemetry{Address: raw.Address, ReadyRequiresAllAccounts: raw.ReadyRequiresAllAccounts, AddressRange: attrRange(b.Body, "address", b.DefRange)}
}

func (d *decoder) hostPort(body hcl.Body, name, value string, def hcl.Range) (host string, port int, ok bool) {
	h, p, err := net.SplitHostPort(value)
	if err == nil {
		port, err = strconv.Atoi(p)
		if err == nil && (port < 0 || port > 65535) {
			err = fmt.Errorf("port %d is out of range", port)
		}
	}
	if err != nil {
		d.errorf(attrRange(body, name, def), "Invalid address", "%s must be host:port, such as \"127.0.0.1:587\"; %q: %v.", name, value, err)
		return "", 0, false
	}
	return h, port, true
}

type rawVaultAuth struct {
	Method                  string   `hcl:"method,label"`
	Token                   *string  `hcl:"token,optional"`
	RoleID                  *string  `hcl:"role_id,optional"`
	SecretID                *string  `hcl:"secret_id,optional"`
	SecretIDWrapped         bool     `hcl:"secret_id_response_wrapped,optional"`
	MountPath               string   `hcl:"mount_path,optional"`
	Role                    string   `hcl:"role,optional"`
	ServiceAccountTokenPath string   `hcl:"service_account_token_path,optional"`
	Region                  string   `hcl:"region,optional"`
	HeaderValue             string   `hcl:"header_value,optional"`
	Body                    hcl.Body `hcl:",body"`
}

type rawVault struct {
	Address       string         `hcl:"address"`
	Namespace     string         `hcl:"namespace,optional"`
	CAFile        string         `hcl:"ca_file,optional"`
	TLSServerName string         `hcl:"tls_server_name,optional"`
	PollInterval  string         `hcl:"poll_interval,optional"`
	Auth          []rawVaultAuth `hcl:"auth,block"`
}

func (d *decoder) vault(b *hcl.Block) *Vault {
	var raw rawVault
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	v := &Vault{Address: raw.Address, Namespace: raw.Namespace, CAFile: raw.CAFile, TLSServerName: raw.TLSServerName, DefRange: b.DefRange}
	v.PollInterval = d.duration(b.Body, "poll_interval", raw.PollInterval, b.DefRange, DefaultVaultPollInterval)
	d.vaultAddress(b, raw.Address)
	if raw.CAFile != "" {
		d.caFile(b.Body, "ca_file", raw.CAFile, b.DefRange)
	}
	authRanges := nestedBlockRanges(b.Body, "auth")
	switch len(raw.Auth) {
	case 0:
		d.errorf(b.DefRange, "Missing Vault auth", "The vault block needs one auth block: auth \"token\", auth \"approle\", auth \"kubernetes\" or auth \"aws\".")
		return v
	case 1:
	default:
		d.errorf(authRanges[1], "Duplicate Vault auth", "The vault block takes exactly one auth block.")
		return v
	}
	a := raw.Auth[0]
	rng := authRanges[0]
	v.Auth = VaultAuth{Method: a.Method, MountPath: a.MountPath, Role: a.Role, ServiceAccountTokenPath: a.ServiceAccountTokenPath, SecretIDWrapped: a.SecretIDWrapped,
		Region: a.Region, HeaderValue: a.HeaderValue}
	unexpected := func(names ...string) {
		for _, n := range names {
			if hasAttr(a.Body, n) {
				d.errorf(attrRange(a.Body, n, rng), "Unexpected attribute", "%s does not apply to auth %q.", n, a.Method)
			}
		}
	}
	required := func(name string, set bool) {
		if !set {
			d.errorf(rng, "Missing required argument", "auth %q needs %s.", a.Method, name)
		}
	}
	switch a.Method {
	case "token":
		required("token", a.Token != nil)
		unexpected("role_id", "secret_id", "secret_id_response_wrapped", "role", "service_account_token_path", "region", "header_value")
		v.Auth.Token = d.secret(a.Body, "token", a.Token, rng)
	case "approle":
		required("role_id", a.RoleID != nil)
		required("secret_id", a.SecretID != nil)
		unexpected("token", "role", "service_account_token_path", "region", "header_value")
		v.Auth.RoleID = d.secret(a.Body, "role_id", a.RoleID, rng)
		v.Auth.SecretID = d.secret(a.Body, "secret_id", a.SecretID, rng)
		if v.Auth.MountPath == "" {
			v.Auth.MountPath = "approle"
		}
	case "kubernetes":
		required("role", a.Role != "")
		unexpected("token", "role_id", "secret_id", "secret_id_response_wrapped", "region", "header_value")
		if v.Auth.MountPath == "" {
			v.Auth.MountPath = "kubernetes"
		}
		if v.Auth.ServiceAccountTokenPath == "" {
			v.Auth.ServiceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
	case "aws":
		// The IAM method: the instance's own AWS credentials sign the
		// login, so nothing needs to be delivered to the host.
		required("role", a.Role != "")
		unexpected("token", "role_id", "secret_id", "secret_id_response_wrapped", "service_account_token_path")
		if v.Auth.MountPath == "" {
			v.Auth.MountPath = "aws"
		}
	default:
		d.errorf(rng, "Unknown Vault auth method", "auth %q is not supported; use \"token\", \"approle\", \"kubernetes\" or \"aws\".", a.Method)
	}
	for _, ref := range []SecretRef{v.Auth.Token, v.Auth.RoleID, v.Auth.SecretID} {
		if ref.Scheme == SecretVault {
			d.errorf(ref.Range, "Invalid secret reference", "Vault login credentials cannot themselves come from Vault; use env:// or file:///.")
		}
	}
	return v
}

// vaultAddress requires https, except on loopback (a local Vault or
// Vault Agent): over plain http the relay's Vault token and every secret
// would cross the network readable by anyone on the path.
func (d *decoder) vaultAddress(b *hcl.Block, raw string) {
	u, err := url.Parse(raw)
	rng := attrRange(b.Body, "address", b.DefRange)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		d.errorf(rng, "Invalid Vault address", "address must be an http(s) URL such as \"https://vault.example.com:8200\"; got %q.", raw)
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		d.errorf(rng, "Plain http Vault address", "address %q would send the Vault token and secrets unencrypted; use https (plain http only on loopback).", raw)
	}
}

type rawListener struct {
	Address           string         `hcl:"address"`
	TLSMode           string         `hcl:"tls_mode,optional"`
	TLSCertFile       string         `hcl:"tls_cert_file,optional"`
	TLSKeyFile        string         `hcl:"tls_key_file,optional"`
	TLSCert           *string        `hcl:"tls_cert,optional"`
	TLSKey            *string        `hcl:"tls_key,optional"`
	AllowInsecureAuth bool           `hcl:"allow_insecure_auth,optional"`
	MaxMessageSize    hcl.Expression `hcl:"max_message_size,optional"`
	MaxRecipients     *int           `hcl:"max_recipients,optional"`
	ReadTimeout       string         `hcl:"read_timeout,optional"`
	WriteTimeout      string         `hcl:"write_timeout,optional"`
	MaxConnsPerIP     *int           `hcl:"max_connections_per_ip,optional"`
	MaxLineLength     hcl.Expression `hcl:"max_line_length,optional"`
	MaxAuthFailures   *int           `hcl:"max_auth_failures,optional"`
	AuthFailureWindow string         `hcl:"auth_failure_window,optional"`
	Delivery          string         `hcl:"delivery,optional"`
	MinTLSVersion     string         `hcl:"min_tls_version,optional"`
}

func (d *decoder) listener(b *hcl.Block) *Listener {
	var raw rawListener
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	l := &Listener{
		Name:              b.Labels[0],
		Address:           raw.Address,
		TLSMode:           strings.ToLower(raw.TLSMode),
		TLSCertFile:       raw.TLSCertFile,
		TLSKeyFile:        raw.TLSKeyFile,
		TLSCert:           d.secret(b.Body, "tls_cert", raw.TLSCert, b.DefRange),
		TLSKey:            d.secret(b.Body, "tls_key", raw.TLSKey, b.DefRange),
		AllowInsecureAuth: raw.AllowInsecureAuth,
		MaxMessageSize:    d.size(raw.MaxMessageSize, "max_message_size", DefaultMaxMessageSize),
		MaxLineLength:     d.size(raw.MaxLineLength, "max_line_length", DefaultMaxLineLength),
		MaxRecipients:     DefaultMaxRecipients,
		DefRange:          b.DefRange,
		AddressRange:      attrRange(b.Body, "address", b.DefRange),
	}
	if raw.MaxRecipients != nil {
		if *raw.MaxRecipients < 1 {
			d.errorf(attrRange(b.Body, "max_recipients", b.DefRange), "Invalid value", "max_recipients must be at least 1.")
		} else {
			l.MaxRecipients = *raw.MaxRecipients
		}
	}
	l.MaxConnectionsPerIP, l.MaxAuthFailures = DefaultMaxConnectionsPerIP, DefaultMaxAuthFailures
	if raw.MaxConnsPerIP != nil {
		l.MaxConnectionsPerIP = d.nonNegative(b.Body, "max_connections_per_ip", *raw.MaxConnsPerIP, b.DefRange)
	}
	if raw.MaxAuthFailures != nil {
		l.MaxAuthFailures = d.nonNegative(b.Body, "max_auth_failures", *raw.MaxAuthFailures, b.DefRange)
	}
	l.AuthFailureWindow = d.duration(b.Body, "auth_failure_window", raw.AuthFailureWindow, b.DefRange, DefaultAuthFailureWindow)
	l.ReadTimeout = d.duration(b.Body, "read_timeout", raw.ReadTimeout, b.DefRange, DefaultReadTimeout)
	l.WriteTimeout = d.duration(b.Body, "write_timeout", raw.WriteTimeout, b.DefRange, DefaultWriteTimeout)
	if l.TLSMode == "" {
		l.TLSMode = TLSStartTLS
	}
	l.Delivery = strings.ToLower(raw.Delivery)
	if l.Delivery == "" {
		l.Delivery = DeliveryDirect
	}
	d.oneOf(b.Body, "delivery", l.Delivery, b.DefRange, DeliveryDirect, DeliveryQueue)
	l.MinTLSVersion = d.minTLSVersion(b.Body, l.Name, raw.MinTLSVersion, b.DefRange)
	l.body = b.Body
	return l
}

// tlsVersions are the values of a listener's min_tls_version.
var tlsVersions = map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// minTLSVersion reads a listener's TLS floor (README "listener"). TLS 1.2
// is the default (RFC 8996 deprecates 1.0 and 1.1); 1.0 and 1.1 are an
// opt-in for old devices, loaded with a warning.
func (d *decoder) minTLSVersion(body hcl.Body, listener, value string, def hcl.Range) uint16 {
	if value == "" && !hasAttr(body, "min_tls_version") {
		return tls.VersionTLS12
	}
	rng := attrRange(body, "min_tls_version", def)
	v, ok := tlsVersions[strings.TrimSpace(value)]
	if !ok {
		hint := ""
		if value == "1" {
			hint = " Write it as a string: min_tls_version = \"1.0\" (the number 1.0 reads as 1)."
		}
		d.errorf(rng, "Invalid min_tls_version", "min_tls_version must be one of \"1.0\", \"1.1\", \"1.2\" (the default) or \"1.3\"; got %q.%s", value, hint)
		return tls.VersionTLS12
	}
	if v < tls.VersionTLS12 {
		d.warnf(rng, "Legacy TLS allowed", "Listener %q accepts TLS %s, which RFC 8996 deprecates, and cipher suites without forward secrecy: only for old devices that cannot do better, on a network you trust.", listener, strings.TrimSpace(value))
	}
	return v
}

// checkListeners validates listeners once command-line overrides are applied,
// since the address decides whether plaintext AUTH is acceptable.
func (d *decoder) checkListeners(ls []*Listener) {
	seen := map[string]*Listener{}
	for _, l := range ls {
		b := &hcl.Block{Body: l.body, DefRange: l.DefRange}
		if _, _, ok := d.hostPort(l.body, "address", l.Address, l.DefRange); !ok {
			continue
		}
		if prev, ok := seen[l.Address]; ok {
			d.errorf(attrRange(l.body, "address", l.DefRange), "Duplicate listener address", "Listeners %q and %q both listen on %s.", prev.Name, l.Name, l.Address)
		}
		seen[l.Address] = l
		if d.oneOf(l.body, "tls_mode", l.TLSMode, l.DefRange, TLSNone, TLSStartTLS, TLSImplicit) {
			d.listenerTLS(b, l)
		}
	}
}

// listenerTLS checks the TLS settings of a listener, and the rule that a
// plaintext listener reachable from other hosts must opt in to plaintext
// AUTH explicitly.
func (d *decoder) listenerTLS(b *hcl.Block, l *Listener) {
	if l.TLSMode == TLSNone {
		d.plaintextListener(b, l)
		return
	}
	owner := fmt.Sprintf("Listener %q", l.Name)
	if !d.certificate(b.Body, b.DefRange, owner, l.TLSCertFile, l.TLSKeyFile, l.TLSCert, l.TLSKey) {
		d.errorf(b.DefRange, "Missing TLS certificate", "%s with tls_mode = %q needs tls_cert_file and tls_key_file (or tls_cert and tls_key).", owner, l.TLSMode)
	}
}

// certificate checks a block's certificate settings — files (tls_cert_file,
// tls_key_file, remembered for CheckHost) or secret references (tls_cert,
// tls_key), never both, each pair whole — and reports whether the block
// gives one (a listener's and the console's certificates follow the same
// rules). The certificate itself is read by CheckHost (files) or the
// runtime (secret references), never here.
func (d *decoder) certificate(body hcl.Body, def hcl.Range, owner, certFile, keyFile string, cert, key SecretRef) bool {
	files := hasAttr(body, "tls_cert_file") || hasAttr(body, "tls_key_file")
	refs := hasAttr(body, "tls_cert") || hasAttr(body, "tls_key")
	switch {
	case files && refs:
		name := "tls_cert"
		if !hasAttr(body, name) {
			name = "tls_key"
		}
		d.errorf(attrRange(body, name, def), "Conflicting TLS certificate settings",
			"%s: give the certificate either as files (tls_cert_file, tls_key_file) or as secret references (tls_cert, tls_key), not both.", owner)
	case refs:
		if !cert.IsSet() || !key.IsSet() {
			d.errorf(def, "Missing TLS certificate", "%s needs both tls_cert and tls_key.", owner)
		}
	case files:
		if certFile == "" || keyFile == "" {
			d.errorf(def, "Missing TLS certificate", "%s needs both tls_cert_file and tls_key_file.", owner)
			break
		}
		d.hostFiles = append(d.hostFiles, hostFile{
			kind: keyPairFile, path: certFile, keyPath: keyFile,
			owner: owner, rng: attrRange(body, "tls_cert_file", def),
		})
	default:
		return false
	}
	return true
}

// plaintextListener checks a tls_mode = "none" listener.
func (d *decoder) plaintextListener(b *hcl.Block, l *Listener) {
	for _, n := range []string{"tls_cert_file", "tls_key_file", "tls_cert", "tls_key", "min_tls_version"} {
		if hasAttr(b.Body, n) {
			d.errorf(attrRange(b.Body, n, b.DefRange), "Unexpected attribute", "%s has no effect with tls_mode = \"none\".", n)
		}
	}
	host, _, err := net.SplitHostPort(l.Address)
	if err == nil && !IsLoopbackHost(host) && !l.AllowInsecureAuth {
		d.errorf(attrRange(b.Body, "tls_mode", b.DefRange), "Plaintext listener off loopback",
			"Listener %q listens on %s without TLS, so passwords would cross the network in clear. Use tls_mode = \"starttls\" or \"implicit\", listen on 127.0.0.1, or set allow_insecure_auth = true if the network is trusted.", l.Name, l.Address)
	}
}

// IsLoopbackHost reports whether a listen host only accepts local
// connections. An empty host listens on every interface.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// size evaluates a size attribute given as a number of bytes or a string.
func (d *decoder) size(expr hcl.Expression, name string, dflt int64) int64 {
	if expr == nil {
		return dflt
	}
	v, diags := expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || v.IsNull() {
		return dflt
	}
	var n int64
	switch v.Type() {
	case cty.Number:
		bf := v.AsBigFloat()
		i, acc := bf.Int64()
		if acc != 0 || i < 0 {
			d.errorf(expr.Range(), "Invalid size", "%s must be a whole, non-negative number of bytes.", name)
			return dflt
		}
		n = i
	case cty.String:
		var err error
		n, err = ParseSize(v.AsString())
		if err != nil {
			d.errorf(expr.Range(), "Invalid size", "%s: %v", name, err)
			return dflt
		}
	default:
		d.errorf(expr.Range(), "Invalid size", "%s must be a number of bytes or a string such as \"35MB\".", name)
		return dflt
	}
	if n <= 0 {
		d.errorf(expr.Range(), "Invalid size", "%s must be greater than zero.", name)
		return dflt
	}
	return n
}

func (d *decoder) applyListenerOverrides(cfg *Config, ov Overrides) {
	if ov.Host == "" && ov.Port == 0 || len(cfg.Listeners) == 0 {
		return
	}
	l := cfg.Listeners[0]
	host, port, err := net.SplitHostPort(l.Address)
	if err != nil {
		return
	}
	if ov.Host != "" {
		host = ov.Host
	}
	if ov.Port != 0 {
		port = strconv.Itoa(ov.Port)
	}
	l.Address = net.JoinHostPort(host, port)
}

// caFile notes a CA bundle for CheckHost: validate reads no file but the
// configuration itself.
func (d *decoder) caFile(body hcl.Body, name, path string, def hcl.Range) {
	d.hostFiles = append(d.hostFiles, hostFile{kind: caBundleFile, path: path, owner: name, rng: attrRange(body, name, def)})
}

// validAddress reports whether s is a bare mailbox address (local@domain).
func validAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == "" && strings.Contains(s, "@")
}
