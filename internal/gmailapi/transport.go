package gmailapi

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// TokenSource holds the account's access token for the Gmail API (scope
// https://mail.google.com/ or gmail.send); implemented by *oauth.Source.
type TokenSource = httpsend.TokenSource

// DefaultBaseURL is the Gmail API's endpoint.
const DefaultBaseURL = "https://gmail.googleapis.com"

// providerName names the Gmail API in replies and log lines.
const providerName = "the Gmail API"

// Transport delivers an account's messages through the Gmail API's
// users.messages.send: the delivery contract of package transport on top
// of the account's token, its limits (as reservations) and its circuits.
type Transport struct {
	// Account is the sending mailbox (the {address} of the request).
	Account string
	// BaseURL replaces DefaultBaseURL (the sandbox, a proxy).
	BaseURL string
	Tokens  TokenSource
	// HTTP sends the requests; nil uses a client with a 5-minute timeout.
	HTTP *http.Client
	// Limits are the account's sending limits (nil: none).
	Limits limits.Limiter
	// Circuit guards the account, ProviderCircuit the Gmail API (shared
	// by its accounts); nil disables one.
	Circuit, ProviderCircuit *limits.Circuit
	Log                      hclog.Logger
	// Member names the mailbox in the provider circuit's count of failing
	// mailboxes (default: Account); the mailboxes of a domain-wide
	// account share one name, so that senders a client makes up cannot
	// open the provider's circuit for every mailbox.
	Member string
}

var _ transport.Transport = (*Transport)(nil)

// defaultHTTP bounds a whole send (35 MB included) below the 10 minutes
// an SMTP client waits for the reply to the final dot (RFC 5321
// §4.5.3.2.6), so that the client hears the relay's answer.
var defaultHTTP = &http.Client{Timeout: 5 * time.Minute}

// Begin refuses a message the transport cannot take (a declared size
// over 35 MB), admits it (circuits, then the account's limits) and
// obtains a token, so that those problems surface at MAIL. The Gmail API
// is contacted at Body only, so the circuits' probe slots are held there.
func (t *Transport) Begin(ctx context.Context, env transport.Envelope) (transport.Delivery, error) {
	log := t.logger().With("msgid", env.ID, "account", t.Account)
	d := &delivery{t: t, log: log, Delivery: &httpsend.Delivery{Env: env, Tokens: t.Tokens, Log: log, Provider: providerName,
		Adm: &httpsend.Admission{Account: t.Account, Member: t.Member, Provider: providerName, Limits: t.Limits, Circuit: t.Circuit, ProviderCircuit: t.ProviderCircuit, Log: log}}}
	if err := d.Start(ctx, MaxMessageBytes, errTooLarge); err != nil {
		return nil, err
	}
	return d, nil
}

func (t *Transport) logger() hclog.Logger {
	if t.Log == nil {
		return hclog.NewNullLogger()
	}
	return t.Log
}

func (t *Transport) client() *http.Client {
	if t.HTTP == nil {
		return defaultHTTP
	}
	return t.HTTP
}

func (t *Transport) baseURL() string {
	if t.BaseURL == "" {
		return DefaultBaseURL
	}
	return t.BaseURL
}

// delivery collects the envelope (httpsend.Delivery) and sends the
// message at Body.
type delivery struct {
	*httpsend.Delivery
	t   *Transport
	log hclog.Logger
}

// Body sends the message. The reservation is kept only when the Gmail
// API accepted it.
func (d *delivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	return d.Send(ctx, func() (func(context.Context) (string, *httpsend.Failure), *httpsend.Failure) {
		fit, f := d.fit(msg)
		if f != nil {
			return nil, f
		}
		return func(ctx context.Context) (string, *httpsend.Failure) { return d.send(ctx, msg, fit) }, nil
	})
}
