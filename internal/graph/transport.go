package graph

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/transport"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// TokenSource holds the account's Graph access token; implemented by
// *oauth.Source.
type TokenSource = httpsend.TokenSource

// DefaultBaseURL is Microsoft Graph's global endpoint.
const DefaultBaseURL = "https://graph.microsoft.com"

// Transport delivers an account's messages through Microsoft Graph
// (sendMail, or a draft with attachments for larger messages): the
// delivery contract of package transport on top of the
// account's token, its limits (as reservations) and its circuits.
type Transport struct {
	httpsend.Mailbox
}

var _ transport.Transport = (*Transport)(nil)

// defaultHTTP serves a Transport without an HTTP client of its own:
// each request within 2 minutes (the relay gives its own client, bounded
// by the delivery's context instead).
var defaultHTTP = &http.Client{Timeout: 2 * time.Minute}

// Begin refuses a message the transport cannot take (a declared size
// over the limit), admits it (circuits, then the account's limits) and
// obtains a token, so that those problems surface at MAIL. Graph is
// contacted at Body only, so the circuits' probe slots are held there.
func (t *Transport) Begin(ctx context.Context, env transport.Envelope) (transport.Delivery, error) {
	hd, err := t.Mailbox.Begin(ctx, env, providerName, maxGraphMessageBytes, errTooLarge)
	if err != nil {
		return nil, err
	}
	return &delivery{Delivery: hd, t: t, log: hd.Log}, nil
}

func (t *Transport) logger() hclog.Logger { return t.Logger() }
func (t *Transport) client() *http.Client { return t.Client(defaultHTTP) }
func (t *Transport) baseURL() string      { return t.URL(DefaultBaseURL) }

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
