package httpsend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Delivery is what an HTTP transport's delivery does whatever the API:
// it checks recipients locally (the API is told them with the message, in
// its header), fits the header to them, runs one send inside the
// admission, and ends. A transport embeds it and adds Body.
type Delivery struct {
	Env    transport.Envelope
	Adm    *Admission
	Tokens TokenSource
	Log    hclog.Logger
	// Provider names the API in replies ("Microsoft Graph").
	Provider string

	rcpts []string        // SMTP paths, in order, each address once
	seen  map[string]bool // their comparison keys
}

// ReplyNoRecipients answers DATA without an accepted recipient.
var ReplyNoRecipients = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}

// AddRcpt checks one recipient: it must be an address a header field can
// name, its NOTIFY must be one a provider without DSN meets (RFC 3461
// §5.2.2; unless the caller sends its own notices), and it takes its
// share of the limits. An address named twice gets one copy.
func (d *Delivery) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	key, ok := rcptfit.Key(rcpt)
	if !ok {
		return d.Adm.Fail(Local(&smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
			Message: "This address cannot be named in a message header, which " + d.Provider + " needs"}, nil))
	}
	if !d.Env.Mail.OwnNotices && !transport.NotifyMetWithoutDSN(opts.Notify) {
		return d.Adm.Fail(Local(&smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 3, 3},
			Message: capitalized(d.Provider) + " does not offer DSN: this NOTIFY cannot be honoured; omit it or submit through a queue listener"}, nil))
	}
	if d.seen[key] {
		return nil
	}
	if f := d.Adm.AddRcpt(time.Now()); f != nil {
		return d.Adm.Fail(f)
	}
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	d.seen[key] = true
	d.rcpts = append(d.rcpts, rcpt)
	return nil
}

// Rcpts returns the accepted recipients, in order.
func (d *Delivery) Rcpts() []string { return d.rcpts }

// Fit reads the message with its header fitted to the recipients (package
// rcptfit) and logs what it changed.
func (d *Delivery) Fit(msg transport.Message) (*rcptfit.Fitted, *Failure) {
	fit, f := d.Refit(msg)
	if f != nil {
		return nil, f
	}
	if a := fit.Adj; a.Dropped > 0 || a.Blind > 0 || a.Bccs > 0 {
		d.log().Info("header recipients fitted to the envelope", "bcc_added", a.Blind, "outside_envelope_removed", a.Dropped, "client_bcc_fields_removed", a.Bccs)
	}
	return fit, nil
}

// Refit is Fit for another read of the same message: it logs nothing.
func (d *Delivery) Refit(msg transport.Message) (*rcptfit.Fitted, *Failure) {
	fit, err := rcptfit.Read(msg, d.rcpts)
	switch {
	case rcptfit.Unreadable(err):
		// RFC 3463 5.6.0: the relay cannot tell whom the API would send
		// it to.
		return nil, Local(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "The message's To or Cc field does not parse as an address list, or its header exceeds 64 KiB; the relay cannot make " + d.Provider + " deliver to the envelope only"}, err)
	case err != nil:
		return nil, Local(ReplyLocal, fmt.Errorf("reading the message: %w", err))
	}
	return fit, nil
}

// Send runs one delivery of the message: prepare reads it (the relay's
// own failures) and returns how to send it; the send holds the circuits'
// probe slots and its outcome is recorded. The reservation is kept only
// when the provider accepted the message.
func (d *Delivery) Send(ctx context.Context, prepare func() (func(context.Context) (string, *Failure), *Failure)) (transport.Result, error) {
	defer d.Abort()
	if len(d.rcpts) == 0 {
		return transport.Result{}, d.Adm.Fail(Local(ReplyNoRecipients, nil))
	}
	send, f := prepare()
	if f != nil {
		return transport.Result{}, d.Adm.Fail(f)
	}
	release, f := d.Adm.Admit(time.Now())
	if f != nil {
		return transport.Result{}, d.Adm.Fail(f)
	}
	reply, f := send(ctx)
	release()
	d.Adm.Record(f)
	if f != nil {
		return transport.Result{}, d.Adm.Fail(f)
	}
	d.Adm.Commit()
	return transport.Result{Reply: reply}, nil
}

// Reset ends the transaction without sending (dry run): having a token
// is what sending would need first.
func (d *Delivery) Reset(ctx context.Context) error {
	if _, err := d.Tokens.Token(ctx); err != nil {
		f := TokenFailure(err)
		d.Adm.Record(f)
		d.Adm.Cancel()
		return d.Adm.Fail(f)
	}
	d.Abort()
	return nil
}

// Abort gives the reservation back unless the message was sent.
func (d *Delivery) Abort() { d.Adm.Cancel() }

func (d *Delivery) log() hclog.Logger {
	if d.Log == nil {
		return hclog.NewNullLogger()
	}
	return d.Log
}

// Start begins a delivery: it refuses a message whose declared size is
// over max (with tooLarge), admits it (circuits, then the account's
// limits) and obtains a token, so that those problems surface at MAIL.
// The API is contacted at Body only, so the circuits' probe slots are
// given back at once.
func (d *Delivery) Start(ctx context.Context, max int64, tooLarge *smtp.SMTPError) error {
	if d.Env.Mail.Size > max {
		return d.Adm.Fail(Local(tooLarge, nil))
	}
	release, f := d.Adm.Admit(time.Now())
	if f != nil {
		return d.Adm.Fail(f)
	}
	release()
	if _, err := d.Tokens.Token(ctx); err != nil {
		d.Adm.Cancel()
		f := TokenFailure(err)
		d.Adm.Record(f)
		return d.Adm.Fail(f)
	}
	return nil
}

// capitalized starts a sentence with name ("the Gmail API").
func capitalized(name string) string {
	if name == "" {
		return name
	}
	return strings.ToUpper(name[:1]) + name[1:]
}
