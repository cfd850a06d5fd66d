package config

import "github.com/hashicorp/hcl/v2"

// Transports: how a provider's messages leave the relay (README
// "Transports").
const (
	// TransportSMTP submits over SMTP with XOAUTH2/OAUTHBEARER.
	TransportSMTP = "smtp"
	// TransportGraph posts to Microsoft Graph's sendMail.
	TransportGraph = "graph"
	// TransportGmailAPI posts to the Gmail API's messages.send.
	TransportGmailAPI = "gmail_api"
)

// Endpoints and scopes of the HTTP transports.
const (
	DefaultGraphURL    = "https://graph.microsoft.com"
	DefaultGmailAPIURL = "https://gmail.googleapis.com"
	// GraphAppOnlyScope is Graph's application scope (Mail.Send granted
	// as an application permission); GraphDelegatedScope the delegated
	// Mail.Send.
	GraphAppOnlyScope   = "https://graph.microsoft.com/.default"
	GraphDelegatedScope = "https://graph.microsoft.com/Mail.Send"
	// GraphMaxConcurrentPerMailbox is Graph's concurrency limit per
	// mailbox, the default cap of a Graph account's deliveries.
	GraphMaxConcurrentPerMailbox = 4
	// GmailAPIMaxConcurrentPerMailbox is the Gmail API transport's cap of
	// sends in flight per mailbox (package gmailapi says why), the default
	// cap of a Gmail API account's deliveries.
	GmailAPIMaxConcurrentPerMailbox = 2
)

// graphScopes are the Microsoft preset's scopes per flow with transport =
// "graph": a token for Graph, not for Exchange's SMTP.
var graphScopes = map[string][]string{
	FlowRefreshToken:      {GraphDelegatedScope, "offline_access"},
	FlowClientCredentials: {GraphAppOnlyScope},
}

// smtpOnlyAttributes are a provider's attributes that only the SMTP
// transport uses.
var smtpOnlyAttributes = []string{
	"smtp_address", "smtp_tls", "tls_server_name", "auth_mechanism",
	"max_messages_per_connection", "connection_idle_timeout", "connection_max_age",
}

// providerTransport checks and defaults a provider's transport and the
// endpoint of an HTTP one.
func (d *decoder) providerTransport(p *Provider, raw rawProvider, body hcl.Body, def hcl.Range) {
	p.Transport = raw.Transport
	if p.Transport == "" {
		p.Transport = TransportSMTP
	}
	if !d.oneOf(body, "transport", p.Transport, def, TransportSMTP, TransportGraph, TransportGmailAPI) {
		p.Transport = TransportSMTP
		return
	}
	switch {
	case p.Transport == TransportGraph && p.Preset == PresetGoogle:
		d.errorf(attrRange(body, "transport", def), "Transport not offered by provider", "transport = \"graph\" is Microsoft Graph; provider %q has preset = \"google\", whose HTTP transport is \"gmail_api\".", p.Name)
	case p.Transport == TransportGmailAPI && p.Preset == PresetMicrosoft:
		d.errorf(attrRange(body, "transport", def), "Transport not offered by provider", "transport = \"gmail_api\" is Google's; provider %q has preset = \"microsoft\", whose HTTP transport is \"graph\".", p.Name)
	}
	p.GraphURL = d.transportURL(body, "graph_url", raw.GraphURL, p.Transport == TransportGraph, DefaultGraphURL, def)
	p.GmailAPIURL = d.transportURL(body, "gmail_api_url", raw.GmailAPIURL, p.Transport == TransportGmailAPI, DefaultGmailAPIURL, def)
	if p.Transport == TransportSMTP {
		return
	}
	for _, name := range smtpOnlyAttributes {
		if hasAttr(body, name) {
			d.warnf(attrRange(body, name, def), "Attribute not used", "%s applies to transport = \"smtp\" only; provider %q uses transport = %q.", name, p.Name, p.Transport)
		}
	}
	if raw.MaxConnections == nil {
		switch p.Transport {
		case TransportGraph:
			p.Pool.MaxConnections = GraphMaxConcurrentPerMailbox
		case TransportGmailAPI:
			p.Pool.MaxConnections = GmailAPIMaxConcurrentPerMailbox
		}
	}
}

// transportURL returns an HTTP transport's endpoint: the configured one
// (only for the transport that uses it), else def.
func (d *decoder) transportURL(body hcl.Body, name, raw string, used bool, dflt string, def hcl.Range) string {
	if raw == "" {
		if used {
			return dflt
		}
		return ""
	}
	if !used {
		d.errorf(attrRange(body, name, def), "Unexpected attribute", "%s only applies to the transport that uses it (transport = %q).", name, map[string]string{"graph_url": TransportGraph, "gmail_api_url": TransportGmailAPI}[name])
		return ""
	}
	d.tokenURL(body, name, raw, def)
	for len(raw) > 0 && raw[len(raw)-1] == '/' {
		raw = raw[:len(raw)-1]
	}
	return raw
}

// transportScopes returns the preset's scopes for a group's flow when the
// provider's transport needs others than SMTP's.
func transportScopes(p *Provider, flow string) ([]string, bool) {
	if p.Preset == PresetMicrosoft && p.Transport == TransportGraph {
		s, ok := graphScopes[flow]
		return s, ok
	}
	return nil, false
}
