package graph

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// TokenSource holds the account's Graph access token; implemented by
// *oauth.Source.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Invalidate drops the cached token if it is the given one (Graph
	// refused it), so that the next Token call refreshes.
	Invalidate(accessToken string)
}

// DefaultBaseURL is Microsoft Graph's global endpoint.
const DefaultBaseURL = "https://graph.microsoft.com"

// Transport delivers an account's messages through Microsoft Graph
// (sendMail, or a draft with attachments for larger messages): the
// delivery contract of package transport on top of the
// account's token, its limits (as reservations) and its circuits.
type Transport struct {
	// Account is the sending mailbox (the {address} of the request).
	Account string
	// BaseURL replaces DefaultBaseURL (national clouds, the sandbox).
	BaseURL string
	Tokens  TokenSource
	// HTTP sends the requests; nil uses a client with a 2-minute timeout.
	HTTP *http.Client
	// Limits are the account's sending limits (nil: none).
	Limits limits.Limiter
	// Circuit guards the account, ProviderCircuit Graph (shared by its
	// accounts); nil disables one.
	Circuit, ProviderCircuit *limits.Circuit
	Log                      hclog.Logger
	// Member names the mailbox in the provider circuit's count of failing
	// mailboxes (default: Account); the mailboxes of a domain-wide
	// account share one name, so that senders a client makes up cannot
	// open the provider's circuit for every mailbox.
	Member string
}

var _ transport.Transport = (*Transport)(nil)

var defaultHTTP = &http.Client{Timeout: 2 * time.Minute}

// Begin refuses a message the transport cannot take (a declared size
// over the limit), admits it (circuits, then the account's limits) and
// obtains a token, so that those problems surface at MAIL. Graph is
// contacted at Body only, so the circuits' probe slots are held there.
func (t *Transport) Begin(ctx context.Context, env transport.Envelope) (transport.Delivery, error) {
	log := t.logger().With("msgid", env.ID, "account", t.Account)
	d := &delivery{t: t, log: log, Delivery: &httpsend.Delivery{Env: env, Tokens: t.Tokens, Log: log, Provider: providerName,
		Adm: &httpsend.Admission{Account: t.Account, Member: t.Member, Provider: providerName, Limits: t.Limits, Circuit: t.Circuit, ProviderCircuit: t.ProviderCircuit, Log: log}}}
	if err := d.Start(ctx, maxGraphMessageBytes, errTooLarge); err != nil {
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

// Body sends the message. The reservation is kept only when Graph
// accepted it.
func (d *delivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	return d.Send(ctx, func() (func(context.Context) (string, *failure), *failure) { return d.prepare(msg) })
}

// prepare reads the message, fits its header to the envelope, and
// returns how to send it: with sendMail when it fits one request, else as
// a draft with its large parts attached.
func (d *delivery) prepare(msg transport.Message) (func(context.Context) (string, *failure), *failure) {
	if msg.Size() > maxGraphMessageBytes {
		return nil, httpsend.Local(errTooLarge, nil)
	}
	fit, f := d.Fit(msg)
	if f != nil {
		return nil, f
	}
	if fit.Size <= maxMessageBytes {
		payload, f := encodeSendMail(fit)
		if f != nil {
			return nil, f
		}
		return func(ctx context.Context) (string, *failure) { return d.sendMail(ctx, payload) }, nil
	}
	lm, f := d.prepareLarge(msg, fit)
	if f != nil {
		return nil, f
	}
	return func(ctx context.Context) (string, *failure) { return d.sendLarge(ctx, lm) }, nil
}
