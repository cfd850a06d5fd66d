package graph

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
	"github.com/oauthrelay/oauthrelay/internal/transport"
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
	d := &delivery{t: t, env: env, seen: map[string]bool{}, log: t.logger().With("msgid", env.ID, "account", t.Account)}
	if env.Mail.Size > maxGraphMessageBytes {
		return nil, d.fail(local(errTooLarge, nil))
	}
	release, f := d.admit(time.Now())
	if f != nil {
		return nil, d.fail(f)
	}
	release()
	if _, err := t.Tokens.Token(ctx); err != nil {
		d.res.Cancel(time.Now())
		f := tokenFailure(err)
		d.record(f)
		return nil, d.fail(f)
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
	res   limits.Reservation
	rcpts []string        // SMTP paths, in order, each address once
	seen  map[string]bool // their comparison keys
	done  bool
}

// admit checks the circuits and, on the first call, reserves the
// message's share of the account's limits. release gives the circuits'
// probe slots back.
func (d *delivery) admit(now time.Time) (release func(), f *failure) {
	release, refused, err := limits.AllowAll(now, d.t.ProviderCircuit, d.t.Circuit)
	if err != nil {
		scope := "account"
		if refused == d.t.ProviderCircuit {
			scope = "provider"
		}
		return nil, &failure{err: &transport.Error{Kind: transport.KindCircuit, Limit: scope, RetryAt: refused.RetryAt(now), Reply: errCircuitOpen, Err: err},
			advice: scope + " circuit open: not contacting Microsoft Graph"}
	}
	if d.res != nil {
		return release, nil
	}
	if d.t.Limits == nil {
		d.res = noReservation{}
		return release, nil
	}
	res, err := d.t.Limits.Reserve(now)
	if err != nil {
		release()
		return nil, limitError(err)
	}
	d.res = res
	return release, nil
}

// AddRcpt checks the recipient locally: Graph is told the recipients with
// the message.
func (d *delivery) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	key, ok := rcptfit.Key(rcpt)
	if !ok {
		return d.fail(local(errBadAddress, nil))
	}
	if !d.env.Mail.OwnNotices && !transport.NotifyMetWithoutDSN(opts.Notify) {
		return d.fail(local(errNotifyUnsupported, nil))
	}
	if d.seen[key] {
		return nil // one copy per address, however often it is named
	}
	if err := d.res.AddRcpt(time.Now()); err != nil {
		return d.fail(limitError(err))
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
		return transport.Result{}, d.fail(local(errNoRecipients, nil))
	}
	send, f := d.prepare(msg)
	if f != nil {
		return transport.Result{}, d.fail(f)
	}
	release, f := d.admit(time.Now())
	if f != nil {
		return transport.Result{}, d.fail(f)
	}
	reply, f := send(ctx)
	release()
	d.record(f)
	if f != nil {
		return transport.Result{}, d.fail(f)
	}
	d.res.Commit()
	d.done = true
	return transport.Result{Reply: reply}, nil
}

// prepare reads the message, fits its header to the envelope, and
// returns how to send it: with sendMail when it fits one request, else as
// a draft with its large parts attached.
func (d *delivery) prepare(msg transport.Message) (func(context.Context) (string, *failure), *failure) {
	if msg.Size() > maxGraphMessageBytes {
		return nil, local(errTooLarge, nil)
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
		f := tokenFailure(err)
		d.record(f)
		return d.fail(f)
	}
	d.Abort()
	return nil
}

// Abort gives the reservation back unless the message was sent.
func (d *delivery) Abort() {
	if d.done {
		return
	}
	d.done = true
	if d.res != nil {
		d.res.Cancel(time.Now())
	}
}

// record tells the circuits what an attempt says about the account and
// Graph; refusals of the relay's own count for neither.
func (d *delivery) record(f *failure) {
	acct, prov := limits.Success, limits.Success
	if f != nil {
		acct, prov = f.account, f.provider
	}
	now := time.Now()
	if acct != 0 && d.t.Circuit != nil {
		d.t.Circuit.Record(now, d.t.Account, acct)
	}
	if prov != 0 && d.t.ProviderCircuit != nil {
		d.t.ProviderCircuit.Record(now, limits.MemberName(d.t.Member, d.t.Account), prov)
	}
}

// fail logs a failure for the operator and returns the contract's error.
func (d *delivery) fail(f *failure) error {
	args := []any{"kind", f.err.Kind, "reply", transport.ReplyText(f.err.Reply), "error", f.err.Error()}
	if f.advice != "" {
		args = append(args, "advice", f.advice)
	}
	if f.err.Kind == transport.KindLocal || f.err.Kind == transport.KindLimit {
		d.log.Info("refused by the relay", args...)
	} else {
		d.log.Warn("Microsoft Graph delivery failed", args...)
	}
	return f.err
}

// noReservation stands for an account without limits.
type noReservation struct{}

func (noReservation) AddRcpt(time.Time) error { return nil }
func (noReservation) DropRcpt()               {}
func (noReservation) Commit()                 {}
func (noReservation) Cancel(time.Time)        {}
