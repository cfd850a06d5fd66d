package config

import (
	"net"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// DefaultAdminAddress is where the operator console listens when the admin
// block names no address: loopback only (README "Operator console").
const DefaultAdminAddress = "127.0.0.1:8080"

// MinAdminTokenLength is the shortest bearer token accepted: 16 random
// characters are 64 bits even as hex (`openssl rand -hex 32` gives 64),
// beyond guessing at any request rate the console can serve. The
// console's throttle does not make shorter tokens safe: it lets the right
// token in during a lockout (so nobody can lock the operators out); what
// it limits is the log noise and work of a flood, not guessing.
const MinAdminTokenLength = 16

// Admin configures the operator console: the admin API (/api/v1) and the
// web dashboard, on their own listener (README "Operator console").
type Admin struct {
	Address string
	// ReadToken and AdminToken are the bearer tokens of the read and the
	// admin scope (the admin token also reads); either may be unset.
	ReadToken, AdminToken SecretRef
	// TLSCertFile/TLSKeyFile or TLSCert/TLSKey serve the console over
	// HTTPS, as for a listener; none: plain HTTP.
	TLSCertFile, TLSKeyFile string
	TLSCert, TLSKey         SecretRef
	// AllowPlaintext lets the console listen off loopback without TLS.
	AllowPlaintext bool
	// Hostnames are the names, besides IP literals and localhost, that
	// the console answers to over plain HTTP: a request naming any other
	// host is refused, so that a web page cannot rebind its own name to
	// the console's address (DNS rebinding). Lower case, no port.
	Hostnames []string
	DefRange  hcl.Range
	// AddressRange is where address was written, for diagnostics.
	AddressRange hcl.Range
}

// TLS reports whether the console is served over HTTPS.
func (a *Admin) TLS() bool {
	return a.TLSCertFile != "" || a.TLSCert.IsSet()
}

// Refs returns the admin block's secret references that are set.
func (a *Admin) Refs() []SecretRef {
	var out []SecretRef
	for _, r := range []SecretRef{a.ReadToken, a.AdminToken, a.TLSCert, a.TLSKey} {
		if r.IsSet() {
			out = append(out, r)
		}
	}
	return out
}

type rawAdmin struct {
	Address        *string  `hcl:"address,optional"`
	ReadToken      *string  `hcl:"read_token,optional"`
	AdminToken     *string  `hcl:"admin_token,optional"`
	TLSCertFile    string   `hcl:"tls_cert_file,optional"`
	TLSKeyFile     string   `hcl:"tls_key_file,optional"`
	TLSCert        *string  `hcl:"tls_cert,optional"`
	TLSKey         *string  `hcl:"tls_key,optional"`
	AllowPlaintext bool     `hcl:"allow_plaintext,optional"`
	Hostnames      []string `hcl:"hostnames,optional"`
}

func (d *decoder) admin(b *hcl.Block) *Admin {
	var raw rawAdmin
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	body, def := b.Body, b.DefRange
	a := &Admin{
		Address:     DefaultAdminAddress,
		ReadToken:   d.secret(body, "read_token", raw.ReadToken, def),
		AdminToken:  d.secret(body, "admin_token", raw.AdminToken, def),
		TLSCertFile: raw.TLSCertFile, TLSKeyFile: raw.TLSKeyFile,
		TLSCert:        d.secret(body, "tls_cert", raw.TLSCert, def),
		TLSKey:         d.secret(body, "tls_key", raw.TLSKey, def),
		AllowPlaintext: raw.AllowPlaintext,
		DefRange:       def,
		AddressRange:   attrRange(body, "address", def),
	}
	if raw.Address != nil {
		a.Address = *raw.Address
		d.hostPort(body, "address", a.Address, def)
	}
	d.adminTokens(body, a)
	d.adminTLS(body, a)
	a.Hostnames = d.adminHostnames(body, raw.Hostnames, def)
	return a
}

// adminTokens checks that somebody can use the console and that literal
// tokens are long enough and distinct (a shared value would make every
// reader an admin).
func (d *decoder) adminTokens(body hcl.Body, a *Admin) {
	if !hasAttr(body, "read_token") && !hasAttr(body, "admin_token") {
		d.errorf(a.DefRange, "Missing admin token", "The admin block needs read_token, admin_token or both: the bearer tokens of the read-only and the admin scope, such as admin_token = \"vault://secret/oauthrelay/admin#admin\".")
		return
	}
	for _, t := range []struct {
		name string
		ref  SecretRef
	}{{"read_token", a.ReadToken}, {"admin_token", a.AdminToken}} {
		if t.ref.Scheme != SecretLiteral {
			continue
		}
		if len(t.ref.Literal()) < MinAdminTokenLength {
			d.errorf(t.ref.Range, "Admin token too short", "%s must be at least %d characters long; generate one with `openssl rand -hex 32`.", t.name, MinAdminTokenLength)
			continue
		}
		d.warnf(t.ref.Range, "Token in the configuration", "%s is written in the configuration files (and git). Keep it in a secret reference (vault://, file:// or env://).", t.name)
	}
	if a.ReadToken.Scheme == SecretLiteral && a.AdminToken.Scheme == SecretLiteral && a.ReadToken.Literal() == a.AdminToken.Literal() {
		d.errorf(a.ReadToken.Range, "Same read and admin token", "read_token and admin_token must differ: with one value every reader could act as an admin.")
	}
}

// adminTLS checks the console's certificate settings and that bearer
// tokens never cross the network in clear unless the operator says so.
func (d *decoder) adminTLS(body hcl.Body, a *Admin) {
	d.certificate(body, a.DefRange, "The admin block", a.TLSCertFile, a.TLSKeyFile, a.TLSCert, a.TLSKey)
	if a.TLS() || a.AllowPlaintext {
		return
	}
	if host, _, err := net.SplitHostPort(a.Address); err == nil && !IsLoopbackHost(host) {
		d.errorf(a.AddressRange, "Console off loopback without TLS", "The console listens on %s without TLS, so its bearer tokens and session cookies would cross the network in clear. Add tls_cert_file and tls_key_file (or tls_cert and tls_key), listen on 127.0.0.1, or set allow_plaintext = true if the network is trusted.", a.Address)
	}
}

// adminHostnames checks the console's extra host names and returns them
// in lower case (host names are case-insensitive, RFC 4343); a trailing
// dot is dropped, as the console drops it from a request's Host.
func (d *decoder) adminHostnames(body hcl.Body, names []string, def hcl.Range) []string {
	var out []string
	for i, n := range names {
		h := strings.TrimSuffix(strings.ToLower(n), ".")
		if !hostName(h) {
			d.errorf(itemRange(body, "hostnames", i, def), "Invalid console host name", "hostnames: %q is not a host name (letters, digits, hyphens and dots, no port or scheme, such as \"relay.example.com\"). IP addresses and localhost are always accepted.", n)
			continue
		}
		out = append(out, h)
	}
	return out
}
