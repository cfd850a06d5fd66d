package httpsend

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Failure is a classified failure with what it tells the circuits and the
// operator.
type Failure struct {
	Err *transport.Error
	// Account and Provider are the outcomes for the account's and the
	// provider's circuits; 0 counts for neither.
	Account, Provider limits.Outcome
	// Advice tells the operator what to do; "" when nothing helps.
	Advice string
	// TokenRefused is set when the provider refused the access token
	// (HTTP 401): SendWithToken then tries once more with a fresh one.
	TokenRefused bool
}

func (f *Failure) Error() string { return f.Err.Error() }

// Replies of the relay's own (RFC 3463 enhanced codes; README "Replies").
var (
	ReplyLocal            = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
	ReplyCircuitOpen      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "The mail provider is failing for this account; not trying for a while (circuit open), try again later"}
	ReplyTokenUnavailable = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure: cannot obtain an access token for the sending account"}
)

// Local is a refusal of the relay's own: it says nothing about the
// provider and counts for no circuit. cause nil means the reply's text.
func Local(reply *smtp.SMTPError, cause error) *Failure {
	if cause == nil {
		cause = errors.New(reply.Message)
	}
	return &Failure{Err: &transport.Error{Kind: transport.KindLocal, Reply: reply, Err: cause}}
}

// TokenFailure is a failure to obtain an access token: the account's
// fault (its credentials), not the provider's.
func TokenFailure(err error) *Failure {
	return &Failure{Err: &transport.Error{Kind: transport.KindToken, Reply: ReplyTokenUnavailable, Err: err}, Account: limits.Failure}
}

// LimitFailure classifies a refusal by the account's limits, with the
// replies package upstream gives: 451 4.7.0 for a message, 452 4.5.3 for
// a recipient (README "Protection").
func LimitFailure(err error) *Failure {
	le, ok := limits.IsLimit(err)
	if !ok {
		return Local(ReplyLocal, err)
	}
	reply := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: fmt.Sprintf("Sending limit reached for this account (%s limit of %d); try again later", le.Kind, le.Limit)}
	if le.Kind == limits.KindMessageRcpts || le.Kind == limits.KindDailyRcpts {
		reply = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients for this account (%s limit of %d); send the rest later", le.Kind, le.Limit)}
	}
	return &Failure{Err: &transport.Error{Kind: transport.KindLimit, Limit: le.Kind, RetryAt: le.RetryAt, Reply: reply, Err: err}}
}
