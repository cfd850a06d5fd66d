package graph

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
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
	d := &delivery{t: t, env: env, seen: map[string]bool{}, log: log,
		adm: &httpsend.Admission{Account: t.Account, Member: t.Member, Provider: providerName, Limits: t.Limits, Circuit: t.Circuit, ProviderCircuit: t.ProviderCircuit, Log: log}}
	if env.Mail.Size > maxGraphMessageBytes {
		return nil, d.adm.Fail(httpsend.Local(errTooLarge, nil))
	}
	release, f := d.adm.Admit(time.Now())
	if f != nil {
		return nil, d.adm.Fail(f)
	}
	release()
	if _, err := t.Tokens.Token(ctx); err != nil {
		d.adm.Cancel()
		f := httpsend.TokenFailure(err)
		d.adm.Record(f)
		return nil, d.adm.Fail(f)
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

// delivery collects the envelope and sends the message at Body.
type delivery struct {
	t     *Transport
	env   transport.Envelope
	log   hclog.Logger
	adm   *httpsend.Admission
	rcpts []string        // SMTP paths, in order, each address once
	seen  map[string]bool // their comparison keys
}

// AddRcpt checks the recipient locally: Graph is told the recipients with
// the message.
func (d *delivery) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	key, ok := rcptfit.Key(rcpt)
	if !ok {
		return d.adm.Fail(httpsend.Local(errBadAddress, nil))
	}
	if !d.env.Mail.OwnNotices && !transport.NotifyMetWithoutDSN(opts.Notify) {
		return d.adm.Fail(httpsend.Local(errNotifyUnsupported, nil))
	}
	if d.seen[key] {
		return nil // one copy per address, however often it is named
	}
	if f := d.adm.AddRcpt(time.Now()); f != nil {
		return d.adm.Fail(f)
	}
	d.seen[key] = true
	d.rcpts = append(d.rcpts, rcpt)
	return nil
}

// Body sends the message. The reservation is kept only when Graph
// accepted it.
func (d *delivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	defer d.Abort()
	if len(d.rcpts) == 0 {
		return transport.Result{}, d.adm.Fail(httpsend.Local(errNoRecipients, nil))
	}
	send, f := d.prepare(msg)
	if f != nil {
		return transport.Result{}, d.adm.Fail(f)
	}
	release, f := d.adm.Admit(time.Now())
	if f != nil {
		return transport.Result{}, d.adm.Fail(f)
	}
	reply, f := send(ctx)
	release()
	d.adm.Record(f)
	if f != nil {
		return transport.Result{}, d.adm.Fail(f)
	}
	d.adm.Commit()
	return transport.Result{Reply: reply}, nil
}

// prepare reads the message, fits its header to the envelope, and
// returns how to send it: with sendMail when it fits one request, else as
// a draft with its large parts attached.
func (d *delivery) prepare(msg transport.Message) (func(context.Context) (string, *failure), *failure) {
	if msg.Size() > maxGraphMessageBytes {
		return nil, httpsend.Local(errTooLarge, nil)
	}
	fit, f := d.fitted(msg)
	if f != nil {
		return nil, f
	}
	if a := fit.Adj; a.Dropped > 0 || a.Blind > 0 || a.Bccs > 0 {
		d.log.Info("header recipients fitted to the envelope", "bcc_added", a.Blind, "outside_envelope_removed", a.Dropped, "client_bcc_fields_removed", a.Bccs)
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

// Reset ends the transaction without sending (dry run): having a token
// is what sending would need first.
func (d *delivery) Reset(ctx context.Context) error {
	if _, err := d.t.Tokens.Token(ctx); err != nil {
		f := httpsend.TokenFailure(err)
		d.adm.Record(f)
		return d.adm.Fail(f)
	}
	d.Abort()
	return nil
}

// Abort gives the reservation back unless the message was sent.
func (d *delivery) Abort() { d.adm.Cancel() }
