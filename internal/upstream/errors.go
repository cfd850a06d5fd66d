package upstream

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Stage is the step of an upstream session that failed.
type Stage string

const (
	StageToken   Stage = "token"   // no access token could be obtained
	StageConnect Stage = "connect" // dial, TLS handshake, greeting, EHLO
	StageAuth    Stage = "auth"
	StageMail    Stage = "mail"
	StageRcpt    Stage = "rcpt"
	StageData    Stage = "data"
	StageReset   Stage = "reset"
	StagePool    Stage = "pool" // no free connection in time
)

// Error is a failed upstream step. Reply is set when the provider answered
// with an SMTP error; otherwise Err holds the transport or token cause.
type Error struct {
	Stage Stage
	Reply *smtp.SMTPError
	// Challenge is the provider's decoded 334 challenge of a failed AUTH.
	Challenge *Challenge
	// Ambiguous is set when the connection broke after the final dot was
	// sent and before the reply arrived: the provider may or may not have
	// accepted the message.
	Ambiguous bool
	// Local is set when the relay refused to send the command (it would not
	// have been valid SMTP): the provider never saw it and the connection
	// is intact. It is never the provider's fault.
	Local bool
	// Refusal, with Local, is the relay's permanent reply to a request the
	// provider cannot carry (an extension it does not offer: 8BITMIME,
	// SMTPUTF8, DSN).
	Refusal *smtp.SMTPError
	// Untrusted is set when the provider's TLS certificate could not be
	// verified: a configuration problem (ca_file, tls_server_name) that no
	// retry can fix.
	Untrusted bool
	Err       error
}

// Retryable reports whether the failure belongs to the connection rather
// than to the message, so that another connection may succeed: a transport
// failure or a 421 before the provider accepted the message.
func (e *Error) Retryable() bool {
	if e.Ambiguous || e.Local || e.Untrusted {
		return false
	}
	switch e.Stage {
	case StageToken, StageAuth, StagePool:
		return false
	}
	return e.Reply == nil || e.Reply.Code == 421
}

// Broken reports whether the connection can serve no further command.
func (e *Error) Broken() bool {
	return !e.Local && (e.Reply == nil || e.Reply.Code == 421)
}

// TransientReply reports a 4xx reply other than 421 on a healthy
// connection: the provider declined for now (throttling, a passing
// fault) and the same transaction may succeed on another connection.
func (e *Error) TransientReply() bool {
	return e.Reply != nil && e.Reply.Code/100 == 4 && e.Reply.Code != 421
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s", e.Stage)
	if e.Reply != nil {
		fmt.Fprintf(&b, ": %d", e.Reply.Code)
		if e.Reply.EnhancedCode != smtp.NoEnhancedCode && e.Reply.EnhancedCode != (smtp.EnhancedCode{}) {
			fmt.Fprintf(&b, " %d.%d.%d", e.Reply.EnhancedCode[0], e.Reply.EnhancedCode[1], e.Reply.EnhancedCode[2])
		}
		fmt.Fprintf(&b, " %s", oneLine(e.Reply.Message))
	}
	if e.Challenge != nil {
		fmt.Fprintf(&b, " (challenge status=%s scope=%s)", e.Challenge.Status, e.Challenge.Scope)
	}
	if e.Ambiguous {
		b.WriteString(" [connection lost after the message was sent: delivery state unknown]")
	}
	if e.Untrusted {
		b.WriteString(" [the provider's TLS certificate is not trusted: check ca_file and tls_server_name]")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying later may succeed.
func (e *Error) Temporary() bool {
	if e.Reply != nil {
		return e.Reply.Code/100 == 4
	}
	return !e.Local
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// replyOf extracts an SMTP reply from an error of the go-smtp client.
func replyOf(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// enhanced reports whether the reply carries the enhanced status code c
// (class ignored), such as "7.139".
func enhanced(r *smtp.SMTPError, subject, detail int) bool {
	return r != nil && r.EnhancedCode[1] == subject && r.EnhancedCode[2] == detail ||
		r != nil && strings.Contains(r.Message, fmt.Sprintf(".%d.%d ", subject, detail))
}

// Diagnose turns a failed upstream AUTH into advice for the operator
// (README "Setting up Google Workspace / Gmail" and "Setting up Microsoft
// 365": Gmail 5.7.8 after a 334 JSON challenge, Microsoft 5.7.3 and 5.7.139).
func Diagnose(e *Error) string {
	if e == nil || e.Stage != StageAuth {
		return ""
	}
	r := e.Reply
	switch {
	case enhanced(r, 7, 139):
		return "Microsoft 365 has SMTP AUTH disabled for this mailbox or tenant: enable Authenticated SMTP for the mailbox (Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false), and check that Security Defaults do not block it"
	case enhanced(r, 7, 3):
		return "Microsoft 365 rejected the token: the delegated scope must include https://outlook.office.com/SMTP.Send (app-only: https://outlook.office365.com/.default with the app registered as an Exchange service principal that has FullAccess or SendAs on the mailbox), and the account address must match the token's user"
	case e.Challenge != nil && e.Challenge.Status == "401":
		return "the provider says the token is invalid or expired; the relay refreshed once and it was still refused: check that the account address matches the token's owner"
	case enhanced(r, 7, 8) || e.Challenge != nil:
		scope := ""
		if e.Challenge != nil && e.Challenge.Scope != "" {
			scope = " (the provider asks for scope " + e.Challenge.Scope + ")"
		}
		return "Google rejected the token: request the scope https://mail.google.com/ (gmail.send does not work for SMTP)" + scope + ", make sure the account address is the token's owner, and for service accounts that domain-wide delegation grants this scope"
	case r != nil && r.Code == 504 || r != nil && r.Code == 502:
		return "the upstream does not offer this SASL mechanism; check auth_mechanism"
	}
	return ""
}

// Replies for failures that are not the provider's own answer (README
// "Replies"; enhanced codes of RFC 3463).
var (
	errLocalReply          = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
	errBadAddress          = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid address for the provider"}
	errUpstreamUnreachable = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Cannot reach the mail provider; try again later"}
	errUpstreamLost        = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to the mail provider was lost; try again later"}
	errAmbiguous           = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to the mail provider was lost after the message was sent; it may have been delivered, check before resending"}
	errCircuitOpen         = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "The mail provider is failing for this account; not trying for a while (circuit open), try again later"}
	errPoolBusy            = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "All connections to the mail provider for this account are busy; try again later"}
	errTokenUnavailable    = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: cannot obtain an access token for the sending account"}
	errUpstreamAuth        = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: the mail provider refused the relay's credentials for the sending account"}
)

// Kind classifies the failure for the delivery contract.
func (e *Error) Kind() transport.Kind {
	switch {
	case e.Local:
		return transport.KindLocal
	case e.Stage == StageToken:
		return transport.KindToken
	case e.Stage == StageAuth:
		return transport.KindAuth
	case e.Reply != nil && e.Reply.Code != 421:
		return transport.KindProvider
	case e.Ambiguous:
		return transport.KindAmbiguous
	case e.Stage == StagePool:
		return transport.KindBusy
	case e.Stage == StageConnect:
		return transport.KindConnect
	}
	return transport.KindLost
}

// ClientReply is the reply a relay client hears for the failure, keeping
// the class (4xx/5xx) of the provider's own answers.
func (e *Error) ClientReply() *smtp.SMTPError {
	switch {
	case e.Local && e.Refusal != nil:
		return e.Refusal
	case e.Local && (e.Stage == StageMail || e.Stage == StageRcpt):
		return errBadAddress
	case e.Local:
		return errLocalReply
	case e.Stage == StageToken:
		return errTokenUnavailable
	case e.Stage == StageAuth:
		return errUpstreamAuth
	case e.Reply != nil && (e.Reply.Code/100 == 4 || e.Reply.Code/100 == 5):
		code, ec := e.Reply.Code, e.Reply.EnhancedCode
		if code == 421 {
			// 421 would tell the client we are closing; we are not.
			code = 451
		}
		if ec == smtp.NoEnhancedCode || ec == (smtp.EnhancedCode{}) || ec[0] != code/100 {
			ec = smtp.EnhancedCode{code / 100, 0, 0}
		}
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "Provider: " + printable(e.Reply.Message)}
	case e.Ambiguous:
		return errAmbiguous
	case e.Stage == StagePool:
		return errPoolBusy
	case e.Stage == StageConnect:
		return errUpstreamUnreachable
	}
	return errUpstreamLost
}

// classify turns a failure into the delivery contract's error.
func classify(err error) error {
	var ue *Error
	if !errors.As(err, &ue) {
		return &transport.Error{Kind: transport.KindLocal, Reply: errLocalReply, Err: err}
	}
	return &transport.Error{Kind: ue.Kind(), Reply: ue.ClientReply(), Err: ue}
}

// printable makes provider-supplied text safe for one reply line.
func printable(s string) string { return transport.Printable(s, 200) }
