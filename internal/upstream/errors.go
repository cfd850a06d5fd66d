package upstream

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
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
