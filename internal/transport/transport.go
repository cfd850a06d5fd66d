// Package transport is the delivery contract every way out of the relay
// implements: the SMTP client (package upstream), the HTTP APIs, and the
// durable queue, which is itself a transport that stores and later
// delivers through the others. Relay sessions depend on this contract
// only.
//
//	Transport.Begin(ctx, envelope) → Delivery
//	Delivery: AddRcpt(ctx, rcpt, options) → Body(ctx, message) → Result; Abort()
//
// A Delivery is used by one goroutine at a time and ends with Body or
// Abort; Abort after Body is a no-op.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Envelope starts a delivery.
type Envelope struct {
	// ID names the message in logs, history and the queue.
	ID string
	// Account is the mailbox the message is sent through (lower case).
	Account string
	// From is the reverse-path as an SMTP path (validated, quoted).
	From string
	// Listener and Client identify who submitted it (history).
	Listener, Client string
	// Mail holds the MAIL parameters the client gave that are passed on.
	Mail MailOptions
}

// MailOptions are the MAIL FROM parameters a transport may pass on.
type MailOptions struct {
	Size int64
	Body smtp.BodyType // "", 7BIT or 8BITMIME
	// UTF8 is SMTPUTF8 (RFC 6531): the envelope or the header section may
	// hold UTF-8.
	UTF8 bool
	// Return is the DSN parameter RET (RFC 3461 §4.3): "", "FULL" or "HDRS".
	Return string
	// EnvelopeID is the DSN parameter ENVID (RFC 3461 §4.4), decoded from
	// xtext; "" when none.
	EnvelopeID string
	// OwnNotices is set by a caller that issues delivery-status
	// notifications itself (the queue): a transport that cannot pass the
	// DSN parameters on drops them instead of refusing the message, and
	// Result.DSN says which happened.
	OwnNotices bool
}

// DSN reports whether the MAIL parameters include a DSN request.
func (o MailOptions) DSN() bool { return o.Return != "" || o.EnvelopeID != "" }

// RcptOptions are the RCPT TO parameters a transport may pass on (DSN,
// RFC 3461 §4.1 and §4.2).
type RcptOptions struct {
	// Notify is NOTIFY: nil when absent, else ["NEVER"] or a set of
	// "SUCCESS", "FAILURE", "DELAY" (upper case).
	Notify []string
	// ORcpt is ORCPT as "rfc822;addr" or "utf-8;addr", the address
	// decoded from xtext; "" when none.
	ORcpt string
}

// MailOptionsOf are go-smtp's MAIL parameters in the contract's form
// (the zero value for nil).
func MailOptionsOf(o *smtp.MailOptions) MailOptions {
	if o == nil {
		return MailOptions{}
	}
	return MailOptions{Size: o.Size, Body: o.Body, UTF8: o.UTF8, Return: string(o.Return), EnvelopeID: o.EnvelopeID}
}

// RcptOptionsOf are go-smtp's RCPT parameters in the contract's form
// (the zero value for nil); go-smtp has checked their syntax.
func RcptOptionsOf(o *smtp.RcptOptions) RcptOptions {
	var ro RcptOptions
	if o == nil {
		return ro
	}
	for _, n := range o.Notify {
		ro.Notify = append(ro.Notify, strings.ToUpper(string(n)))
	}
	if o.OriginalRecipient != "" {
		ro.ORcpt = strings.ToLower(string(o.OriginalRecipientType)) + ";" + o.OriginalRecipient
	}
	return ro
}

// DSN reports whether the RCPT parameters include a DSN request.
func (o RcptOptions) DSN() bool { return len(o.Notify) > 0 || o.ORcpt != "" }

// NotifyMetWithoutDSN reports whether a NOTIFY request is met by a
// provider that knows nothing of DSN: one that reports failures, as every
// provider does (RFC 3461 §4.1: the default is FAILURE or FAILURE,DELAY),
// and asks for no success notice (§5.2.2: that would need a "relayed"
// notice, which only a queue can send).
func NotifyMetWithoutDSN(notify []string) bool {
	return len(notify) == 0 || Notifies(notify, "FAILURE") && !Notifies(notify, "SUCCESS")
}

// Notifies reports whether a NOTIFY list asks for v ("SUCCESS", "FAILURE",
// "DELAY"). An absent NOTIFY asks for failures (RFC 3461 §4.1: the
// server's default is FAILURE or FAILURE,DELAY; the relay reports
// failures only).
func Notifies(notify []string, v string) bool {
	if len(notify) == 0 {
		return v == "FAILURE"
	}
	for _, n := range notify {
		if strings.EqualFold(strings.TrimSpace(n), v) {
			return true
		}
	}
	return false
}

// Message is a received message body, readable as often as needed.
type Message interface {
	// Reader returns a new reader over the whole message.
	Reader() (io.Reader, error)
	Size() int64
}

// Result is a successful Body's outcome.
type Result struct {
	// Reply is the provider's (or the queue's) text, for logs and for the
	// client's 250 line.
	Reply string
	// Queued is set when the message was stored for later delivery (its
	// queue ID is the envelope's ID).
	Queued bool
	// Failed lists recipients the transport refused at Body although
	// AddRcpt had accepted them (transports that send at Body); nil for
	// SMTP, where one DATA reply covers every accepted recipient.
	Failed map[string]error
	// DSN is set when the provider took the DSN parameters (RFC 3461): it
	// notifies the sender as they asked. Unset, a caller with
	// MailOptions.OwnNotices owes a "relayed" notification to recipients
	// whose NOTIFY includes SUCCESS (RFC 3461 §5.2.2).
	DSN bool
}

// Transport starts deliveries.
type Transport interface {
	Begin(ctx context.Context, env Envelope) (Delivery, error)
}

// EnvelopeBeginner is a Transport that can take a whole envelope at once
// (the SMTP transport pipelines MAIL, every RCPT and DATA to a provider
// that offers PIPELINING, RFC 2920). errs[i] is rcpts[i]'s verdict, as
// AddRcpt's; err is the refusal to start, as Begin's.
type EnvelopeBeginner interface {
	BeginWith(ctx context.Context, env Envelope, rcpts []string, opts []RcptOptions) (d Delivery, errs []error, err error)
}

// Delivery is one message's way through a transport.
type Delivery interface {
	AddRcpt(ctx context.Context, rcpt string, opts RcptOptions) error
	Body(ctx context.Context, msg Message) (Result, error)
	// Reset ends the transaction without sending (dry run); the
	// transport must still have been able to send.
	Reset(ctx context.Context) error
	Abort()
}

// Kind says why a delivery failed, for metrics and scheduling; the reply
// says what the client hears.
type Kind int

const (
	KindProvider  Kind = iota // the provider answered (Reply is its answer)
	KindLocal                 // the relay refused the request itself (malformed, internal)
	KindToken                 // no access token
	KindAuth                  // the provider refused the token
	KindConnect               // the provider could not be reached or its TLS was refused
	KindLost                  // the connection was lost before the message was accepted
	KindAmbiguous             // the connection was lost after the final dot: state unknown
	KindBusy                  // every connection of the account is in use
	KindCircuit               // a circuit breaker is open: the provider was not contacted
	KindLimit                 // an account limit refused it: the provider was not contacted
	KindStorage               // the queue cannot store it now
)

// Error is a classified delivery failure. Reply is what the SMTP client
// hears (4xx: may succeed later; 5xx: never as sent); Err is the cause for
// the log, free of secrets and message content.
type Error struct {
	Kind  Kind
	Reply *smtp.SMTPError
	Err   error
	// Limit names the limit (KindLimit) or the circuit's scope
	// (KindCircuit: "account" or "provider").
	Limit string
	// RetryAt, when set, is the earliest time a new attempt can succeed
	// (a rate limit's next token, a circuit's next probe).
	RetryAt time.Time
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return ReplyText(e.Reply)
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the same message may succeed later.
func (e *Error) Temporary() bool { return e.Reply == nil || e.Reply.Code/100 != 5 }

// Attempted reports whether the provider was contacted about the message
// (an attempt that counts), as opposed to a refusal before any contact.
func (e *Error) Attempted() bool {
	switch e.Kind {
	case KindCircuit, KindLimit, KindBusy, KindStorage, KindLocal:
		return false
	}
	return true
}

// As returns err's *Error, or a generic temporary local error for
// anything unclassified.
func As(err error) *Error {
	var te *Error
	if errors.As(err, &te) {
		return te
	}
	return &Error{Kind: KindLocal, Err: err, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}}
}

// ReplyText formats a reply as one line: "451 4.7.0 text".
func ReplyText(r *smtp.SMTPError) string {
	if r == nil {
		return ""
	}
	ec := r.EnhancedCode
	if ec == smtp.NoEnhancedCode || ec == (smtp.EnhancedCode{}) {
		return fmt.Sprintf("%d %s", r.Code, r.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, ec[0], ec[1], ec[2], r.Message)
}

// Printable makes provider- or client-supplied text safe for one log or
// reply line: control characters become spaces, and it is cut (on a rune
// boundary) after max bytes.
func Printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(s)
}
