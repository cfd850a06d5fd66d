package gmailapi

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
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
	httpsend.Mailbox
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
	hd, err := t.Mailbox.Begin(ctx, env, providerName, MaxMessageBytes, errTooLarge)
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
