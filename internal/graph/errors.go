package graph

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
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
	errLocalReply       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
	errBadAddress       = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "This address cannot be named in a message header, which Microsoft Graph needs"}
	errNoRecipients     = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	errCircuitOpen      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "The mail provider is failing for this account; not trying for a while (circuit open), try again later"}
	errBusy             = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "All Microsoft Graph requests for this mailbox are busy; try again later"}
	errTokenUnavailable = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: cannot obtain an access token for the sending account"}
	errTokenRefused     = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: Microsoft Graph refused the relay's token for the sending account"}
	errUnreachable      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Cannot reach Microsoft Graph; try again later"}
	errLost             = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to Microsoft Graph was lost before the message was sent; try again later"}
	errAmbiguous        = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to Microsoft Graph was lost after the message was sent; it may have been delivered, check before resending"}
	// RFC 3461 §5.2.2, as package upstream refuses it for a provider
	// without DSN: Graph has none (RFC 3463 5.3.3).
	errNotifyUnsupported = &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 3, 3},
		Message: "Microsoft Graph does not offer DSN: this NOTIFY cannot be honoured; omit it or submit through a queue listener"}
	// RFC 3463 5.6.0: the relay cannot tell whom Graph would send it to.
	errHeaderUnreadable = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "The message's To or Cc field does not parse as an address list, or its header exceeds 64 KiB; the relay cannot make Microsoft Graph deliver to the envelope only"}
	// RFC 3463 5.3.4: over Exchange Online's largest message size.
	errTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("Message too large for Microsoft Graph: Exchange Online sends messages of up to %d bytes", maxGraphMessageBytes)}
	// RFC 3463 5.6.0: a message over sendMail's limit must be split
	// along its MIME structure.
	errStructureRefused = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: fmt.Sprintf("The message is too large for one Microsoft Graph request and its MIME structure cannot be split (broken multipart syntax, more than %d parts or nested deeper than %d)", maxParts, maxDepth)}
	errUploadSessionLost = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 5},
		Message: "Provider: Microsoft Graph dropped an attachment's upload session; try again later"}
	errUnexpectedAnswer = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 5},
		Message: "Provider: Microsoft Graph gave an answer the relay cannot use; try again later"}
)

// failure is a classified failure with what it tells the circuits and the
// operator.
type failure struct {
	err               *transport.Error
	account, provider limits.Outcome // 0: counts for neither
	advice            string         // for the operator's log; "" when none
}

func (f *failure) Error() string { return f.err.Error() }

// local is a refusal of the relay's own: it says nothing about the
// provider and counts for no circuit.
func local(reply *smtp.SMTPError, cause error) *failure {
	if cause == nil {
		cause = errors.New(reply.Message)
	}
	return &failure{err: &transport.Error{Kind: transport.KindLocal, Reply: reply, Err: cause}}
}

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
		return &failure{err: &transport.Error{Kind: transport.KindAuth, Reply: errTokenRefused, Err: e},
			account: limits.Failure, provider: limits.MemberFailure,
			advice: "Microsoft Graph refused the access token twice (the relay refreshed it once): request it for https://graph.microsoft.com/.default (app-only) or Mail.Send (delegated), from the mailbox's tenant"}
	case e.Code == codeSendAsDenied:
		// A refusal of this message's From: the account is healthy.
		return &failure{err: provider(550, smtp.EnhancedCode{5, 7, 1}, "Provider: the sending mailbox may not send as this message's From address (ErrorSendAsDenied)"),
			advice: "grant the mailbox Send As on the From address (Add-RecipientPermission <from> -AccessRights SendAs -Trustee <mailbox>) or send with the mailbox's own address in From"}
	case e.Code == codeAccessDenied || e.Status == http.StatusForbidden:
		// The app may not use this mailbox at all: every message fails
		// until an administrator acts, so the queue defers (KindAuth).
		return &failure{err: &transport.Error{Kind: transport.KindAuth, Err: e,
			Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Provider: Microsoft Graph denied the relay access to the sending mailbox"}},
			account: limits.Failure, provider: limits.MemberFailure,
			advice: "give the app the Mail.Send application permission with admin consent, and if an application access policy (New-ApplicationAccessPolicy) restricts the app, include this mailbox in it"}
	case e.Code == codeMailboxNotREST:
		// RFC 3463 X.3.5 (system not configured to accept it) rather
		// than X.1.1 or X.2.1, which blame the recipient's mailbox.
		return &failure{err: provider(550, smtp.EnhancedCode{5, 3, 5}, "Provider: the sending mailbox cannot use the Microsoft Graph mail API (MailboxNotEnabledForRESTAPI)"),
			account: limits.Failure,
			advice:  "the sending mailbox must be a licensed Exchange Online mailbox (on-premises, inactive or unlicensed mailboxes cannot send through Graph); send through SMTP for it"}
	case e.Code == codeMessageTooLarge || e.Code == codeRequestTooLarge || e.Status == http.StatusRequestEntityTooLarge:
		return &failure{err: provider(552, smtp.EnhancedCode{5, 3, 4}, "Provider: message too large for the sending mailbox (ErrorMessageSizeExceeded)"),
			advice: "the message exceeds the mailbox's MaxSendSize or Graph's request limit; raise MaxSendSize (Set-Mailbox -MaxSendSize) if it should go out"}
	case e.Status == http.StatusTooManyRequests:
		return &failure{err: provider(451, smtp.EnhancedCode{4, 4, 5}, "Provider: Microsoft Graph is throttling this mailbox; try again later"),
			account: limits.Failure, provider: limits.MemberFailure}
	case e.Status == http.StatusGatewayTimeout:
		// The gateway gave up waiting: Graph may have sent it.
		return &failure{err: &transport.Error{Kind: transport.KindAmbiguous, Reply: errAmbiguous, Err: e, RetryAt: e.RetryAt},
			account: limits.Failure, provider: limits.Failure}
	case e.Status >= 500:
		return &failure{err: provider(451, smtp.EnhancedCode{4, 4, 5}, "Provider: Microsoft Graph is unavailable; try again later"),
			account: limits.Failure, provider: limits.Failure}
	}
	// Any other answer is about this message (ErrorInvalidRecipients,
	// ErrorMimeContentInvalid): RFC 3463 5.6.0.
	return &failure{err: provider(554, smtp.EnhancedCode{5, 6, 0}, "Provider: "+transport.Printable(e.Code+": "+e.Message, 200))}
}

// retryAt parses Retry-After: delay-seconds or an HTTP-date (RFC 9110
// §10.2.3); zero when absent or malformed.
func retryAt(v string, now time.Time) time.Time {
	if v == "" {
		return time.Time{}
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 && s <= maxDelaySeconds {
		return now.Add(time.Duration(s) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}

// progress is how far a request got before it failed.
type progress int

const (
	notConnected progress = iota // no connection: Graph saw nothing
	connected                    // the request was not written whole: Graph cannot have sent it
	written                      // the request was written whole: Graph may have sent it
)

// classifyNetwork classifies a request that got no answer.
func classifyNetwork(ctx context.Context, err error, p progress) *failure {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) {
		return &failure{err: &transport.Error{Kind: transport.KindConnect, Reply: errUnreachable, Err: err},
			account: limits.Failure, provider: limits.Failure,
			advice: "the Graph endpoint's TLS certificate is not trusted: check the CA configuration and the Graph URL"}
	}
	var te *transport.Error
	switch p {
	case written:
		te = &transport.Error{Kind: transport.KindAmbiguous, Reply: errAmbiguous, Err: err}
	case connected:
		te = &transport.Error{Kind: transport.KindLost, Reply: errLost, Err: err}
	default:
		te = &transport.Error{Kind: transport.KindConnect, Reply: errUnreachable, Err: err}
	}
	if ctx.Err() != nil {
		// Our side gave up (the client left, shutdown): not Graph's fault.
		return &failure{err: te}
	}
	return &failure{err: te, account: limits.Failure, provider: limits.Failure}
}

// tokenFailure is a failure to obtain an access token.
func tokenFailure(err error) *failure {
	return &failure{err: &transport.Error{Kind: transport.KindToken, Reply: errTokenUnavailable, Err: err}, account: limits.Failure}
}

// limitError classifies a refusal by the account's limits, with the
// replies package upstream gives.
func limitError(err error) *failure {
	le, ok := limits.IsLimit(err)
	if !ok {
		return local(errLocalReply, err)
	}
	reply := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: fmt.Sprintf("Sending limit reached for this account (%s limit of %d); try again later", le.Kind, le.Limit)}
	if le.Kind == limits.KindMessageRcpts || le.Kind == limits.KindDailyRcpts {
		reply = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients for this account (%s limit of %d); send the rest later", le.Kind, le.Limit)}
	}
	return &failure{err: &transport.Error{Kind: transport.KindLimit, Limit: le.Kind, RetryAt: le.RetryAt, Reply: reply, Err: err}}
}

// maxDelaySeconds is the largest delay-seconds a time.Duration holds; a
// larger one is taken as malformed rather than wrapped into the past.
const maxDelaySeconds = int(math.MaxInt64 / int64(time.Second))
