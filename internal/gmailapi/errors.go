package gmailapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// The Gmail API's error reasons (Gmail API "Resolve errors", and the
// Google APIs error format).
const (
	reasonInsufficientPermissions = "insufficientPermissions"
	reasonDomainPolicy            = "domainPolicy"
	reasonDailyLimit              = "dailyLimitExceeded"
	reasonRateLimit               = "rateLimitExceeded"
	reasonUserRateLimit           = "userRateLimitExceeded"
	reasonFailedPrecondition      = "failedPrecondition"
	reasonUploadTooLarge          = "uploadTooLarge"
)

// Replies of the relay's own (RFC 3463 enhanced codes; README "Replies").
var (
	errTokenRefused = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: the Gmail API refused the relay's token for the sending account"}
	errTooLarge     = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("Message too large: the Gmail API takes messages up to 35 MB (%d bytes)", MaxMessageBytes)}
)

// throttleRetry is when to try again after throttling that named no
// time: the per-user rate is a moving average over a minute at most, and
// Google's backoff guidance caps the wait at 32 to 64 seconds.
const throttleRetry = 30 * time.Second

// apiError is the Gmail API's error answer:
// {"error":{"code","message","errors":[{"domain","reason","message"}],"status"}}.
type apiError struct {
	Status  int
	Reason  string // of the first item of "errors"; "" when none
	Message string
	// RetryAt is when Google said to try again: Retry-After (RFC 9110
	// §10.2.3), else a "Retry after <time>" in the message (sending
	// limits); zero when it said nothing.
	RetryAt time.Time
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the Gmail API answered %d %s: %s", e.Status, e.Reason, transport.Printable(e.Message, 200))
}

// retryAfterText finds the time to retry that Gmail puts in the message
// of a sending limit error ("User-rate limit exceeded.  Retry after
// 2030-01-02T03:04:05.000Z (Mail sending)").
var retryAfterText = regexp.MustCompile(`Retry after (\d{4}-\d\d-\d\dT[0-9:.]+Z)`)

// readAPIError decodes the Gmail API's error answer as far as it can.
func readAPIError(resp *http.Response, now time.Time) *apiError {
	e := &apiError{Status: resp.StatusCode, RetryAt: httpsend.RetryAfter(resp.Header.Get("Retry-After"), now)}
	var body struct {
		Error struct {
			Message string `json:"message"`
			Errors  []struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBody)).Decode(&body) == nil {
		e.Message = body.Error.Message
		if len(body.Error.Errors) > 0 {
			e.Reason = body.Error.Errors[0].Reason
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if e.RetryAt.IsZero() {
		if m := retryAfterText.FindStringSubmatch(e.Message); m != nil {
			if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && t.After(now) {
				e.RetryAt = t
			}
		}
	}
	return e
}

// classifyAPI maps the Gmail API's answer to an SMTP reply, its kind and
// its outcomes for the circuits (see README "Replies").
func classifyAPI(e *apiError) *httpsend.Failure {
	switch {
	case e.Status == http.StatusUnauthorized:
		return &httpsend.Failure{Err: &transport.Error{Kind: transport.KindAuth, Reply: errTokenRefused, Err: e},
			Account: limits.Failure, Provider: limits.MemberFailure, TokenRefused: true,
			Advice: "the Gmail API refused the access token twice (the relay refreshed it once): check that the account's OAuth client and refresh token (or service account) are still valid"}
	case e.Reason == reasonDailyLimit || isSendingLimit(e):
		return quotaFailure(e, time.Now())
	case e.Status == http.StatusTooManyRequests || e.Reason == reasonRateLimit || e.Reason == reasonUserRateLimit:
		return &httpsend.Failure{Err: provider(e, 451, smtp.EnhancedCode{4, 4, 5}, "Provider: the Gmail API is throttling this account; try again later", throttleRetry),
			Account: limits.Failure, Provider: limits.MemberFailure}
	case e.Status == http.StatusForbidden:
		return forbidden(e)
	case e.Reason == reasonFailedPrecondition || e.Status == http.StatusNotFound:
		// RFC 3463 X.3.5 (system not configured to accept it) rather
		// than X.1.x or X.2.x, which blame the recipient's mailbox.
		return &httpsend.Failure{Err: provider(e, 550, smtp.EnhancedCode{5, 3, 5}, "Provider: the sending account cannot use Gmail ("+transport.Printable(e.Message, 80)+")", 0),
			Account: limits.Failure,
			Advice:  "the account needs a Gmail mailbox: turn Gmail on for the user in the Admin console (Apps → Google Workspace → Gmail), and check that the account address is the user's"}
	case e.Status == http.StatusRequestEntityTooLarge || e.Reason == reasonUploadTooLarge:
		return &httpsend.Failure{Err: provider(e, 552, smtp.EnhancedCode{5, 3, 4}, "Provider: message too large for the Gmail API", 0)}
	case e.Status == http.StatusGatewayTimeout:
		// The gateway gave up waiting: Gmail may have sent it.
		return &httpsend.Failure{Err: &transport.Error{Kind: transport.KindAmbiguous, Reply: httpsend.Ambiguous(providerName), Err: e, RetryAt: e.RetryAt},
			Account: limits.Failure, Provider: limits.Failure}
	case e.Status >= 500:
		return &httpsend.Failure{Err: provider(e, 451, smtp.EnhancedCode{4, 4, 5}, "Provider: the Gmail API is unavailable; try again later", throttleRetry),
			Account: limits.Failure, Provider: limits.Failure}
	}
	// Any other answer is about this message (invalidArgument: "Invalid
	// To header", a From it will not send; badRequest): RFC 3463 5.6.0.
	return &httpsend.Failure{Err: provider(e, 554, smtp.EnhancedCode{5, 6, 0}, "Provider: "+transport.Printable(e.Reason+": "+e.Message, 200), 0)}
}

// provider is a KindProvider error with the reply given and RetryAt from
// the answer, else retryIn from now (0: none).
func provider(e *apiError, code int, ec smtp.EnhancedCode, msg string, retryIn time.Duration) *transport.Error {
	te := &transport.Error{Kind: transport.KindProvider, Err: e, RetryAt: e.RetryAt, Reply: &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}}
	if te.RetryAt.IsZero() && retryIn > 0 {
		te.RetryAt = time.Now().Add(retryIn)
	}
	return te
}
