package graph

import (
	"fmt"
	"net/http"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// Graph's error codes for mail (Microsoft Graph error responses; user:
// sendMail).
const (
	codeSendAsDenied     = "ErrorSendAsDenied"
	codeAccessDenied     = "ErrorAccessDenied"
	codeMailboxNotREST   = "MailboxNotEnabledForRESTAPI"
	codeMessageTooLarge  = "ErrorMessageSizeExceeded"
	codeRequestTooLarge  = "RequestBodyTooLarge"
	codeInvalidAuthToken = "InvalidAuthenticationToken"
)

// Replies of the relay's own (RFC 3463 enhanced codes; README "Replies").
var (
	errTokenRefused = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: Microsoft Graph refused the relay's token for the sending account"}
	errLost         = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to Microsoft Graph was lost before the message was sent; try again later"}
	// RFC 3463 5.3.4: over Exchange Online's largest message size.
	errTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("Message too large for Microsoft Graph: Exchange Online sends messages of up to %d bytes", maxGraphMessageBytes)}
	// RFC 3463 5.6.0: a message over sendMail's limit must be split
	// along its MIME structure.
	errStructureRefused = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: fmt.Sprintf("The message is too large for one Microsoft Graph request and its MIME structure cannot be split (broken multipart syntax, more than %d parts or nested deeper than %d)", maxParts, maxDepth)}
	errUploadSessionLost = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 5},
		Message: "Provider: Microsoft Graph dropped an attachment's upload session; try again later"}
	// RFC 3463 5.7.1: not permitted, until an administrator grants it.
	errDraftRefused = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Provider: Microsoft Graph refused to create a draft, which a message over 3 MiB needs (the app lacks Mail.ReadWrite)"}
	errUnexpectedAnswer = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 5},
		Message: "Provider: Microsoft Graph gave an answer the relay cannot use; try again later"}
)

// failure is a classified failure with what it tells the circuits and the
// operator (shared with the other HTTP transports).
type failure = httpsend.Failure

// apiError is Graph's error answer: {"error":{"code","message"}}.
type apiError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
	// RetryAt is from Retry-After (RFC 9110 §10.2.3); zero when absent.
	RetryAt time.Time
}

func (e *apiError) Error() string {
	return fmt.Sprintf("Microsoft Graph answered %d %s: %s (request-id %s)", e.Status, e.Code, transport.Printable(e.Message, 200), e.RequestID)
}

// classifyAPI maps Graph's answer to an SMTP reply, its kind and its
// outcomes for the circuits (see README "Replies").
func classifyAPI(e *apiError) *failure {
	provider := func(code int, ec smtp.EnhancedCode, msg string) *transport.Error {
		return &transport.Error{Kind: transport.KindProvider, Err: e, RetryAt: e.RetryAt,
			Reply: &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}}
	}
	switch {
	case e.Status == http.StatusUnauthorized:
		return &failure{Err: &transport.Error{Kind: transport.KindAuth, Reply: errTokenRefused, Err: e},
			Account: limits.Failure, Provider: limits.MemberFailure,
			Advice: "Microsoft Graph refused the access token twice (the relay refreshed it once): request it for https://graph.microsoft.com/.default (app-only) or Mail.Send (delegated), from the mailbox's tenant"}
	case e.Code == codeSendAsDenied:
		// A refusal of this message's From: the account is healthy.
		return &failure{Err: provider(550, smtp.EnhancedCode{5, 7, 1}, "Provider: the sending mailbox may not send as this message's From address (ErrorSendAsDenied)"),
			Advice: "grant the mailbox Send As on the From address (Add-RecipientPermission <from> -AccessRights SendAs -Trustee <mailbox>) or send with the mailbox's own address in From"}
	case e.Code == codeAccessDenied || e.Status == http.StatusForbidden:
		// The app may not use this mailbox at all: every message fails
		// until an administrator acts, so the queue defers (KindAuth).
		return &failure{Err: &transport.Error{Kind: transport.KindAuth, Err: e,
			Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Provider: Microsoft Graph denied the relay access to the sending mailbox"}},
			Account: limits.Failure, Provider: limits.MemberFailure,
			Advice: "give the app the Mail.Send application permission with admin consent, and if an application access policy (New-ApplicationAccessPolicy) restricts the app, include this mailbox in it"}
	case e.Code == codeMailboxNotREST:
		// RFC 3463 X.3.5 (system not configured to accept it) rather
		// than X.1.1 or X.2.1, which blame the recipient's mailbox.
		return &failure{Err: provider(550, smtp.EnhancedCode{5, 3, 5}, "Provider: the sending mailbox cannot use the Microsoft Graph mail API (MailboxNotEnabledForRESTAPI)"),
			Account: limits.Failure,
			Advice:  "the sending mailbox must be a licensed Exchange Online mailbox (on-premises, inactive or unlicensed mailboxes cannot send through Graph); send through SMTP for it"}
	case e.Code == codeMessageTooLarge || e.Code == codeRequestTooLarge || e.Status == http.StatusRequestEntityTooLarge:
		return &failure{Err: provider(552, smtp.EnhancedCode{5, 3, 4}, "Provider: message too large for the sending mailbox (ErrorMessageSizeExceeded)"),
			Advice: "the message exceeds the mailbox's MaxSendSize or Graph's request limit; raise MaxSendSize (Set-Mailbox -MaxSendSize) if it should go out"}
	case e.Status == http.StatusTooManyRequests:
		return &failure{Err: provider(451, smtp.EnhancedCode{4, 4, 5}, "Provider: Microsoft Graph is throttling this mailbox; try again later"),
			Account: limits.Failure, Provider: limits.MemberFailure}
	case e.Status == http.StatusGatewayTimeout:
		// The gateway gave up waiting: Graph may have sent it.
		return &failure{Err: &transport.Error{Kind: transport.KindAmbiguous, Reply: httpsend.Ambiguous(providerName), Err: e, RetryAt: e.RetryAt},
			Account: limits.Failure, Provider: limits.Failure}
	case e.Status >= 500:
		return &failure{Err: provider(451, smtp.EnhancedCode{4, 4, 5}, "Provider: Microsoft Graph is unavailable; try again later"),
			Account: limits.Failure, Provider: limits.Failure}
	}
	// Any other answer is about this message (ErrorInvalidRecipients,
	// ErrorMimeContentInvalid): RFC 3463 5.6.0.
	return &failure{Err: provider(554, smtp.EnhancedCode{5, 6, 0}, "Provider: "+transport.Printable(e.Code+": "+e.Message, 200))}
}
