package gmailapi

import (
	"net/http"
	"strings"
	"time"
	_ "time/tzdata" // pacificTime on hosts without a time zone database

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// isSendingLimit reports whether a throttling answer is Gmail's daily
// sending limit: 429 "User-rate limit exceeded" marked "(Mail sending)"
// with the time to retry (Gmail API "Resolve errors": mail sending
// limits). Google warns that it may last for hours.
func isSendingLimit(e *apiError) bool {
	return (e.Status == http.StatusTooManyRequests || e.Status == http.StatusForbidden) &&
		strings.Contains(strings.ToLower(e.Message), "mail sending")
}

// quotaFailure is a daily quota used up: the user's sending limit or the
// project's daily limit (dailyLimitExceeded). Both are temporary (451
// 4.4.5: Gmail's own SMTP reply for its sending limit is 5.4.5, but a
// quota that refills is no reason to bounce), and retrying before the
// quota refills only adds refusals, so RetryAt is Google's time when it
// gave one, else the end of Google's day: its daily quotas reset at
// midnight Pacific Time. The account's circuit counts it; the provider's
// too for the project's limit, which refuses every account of the project.
func quotaFailure(e *apiError, now time.Time) *httpsend.Failure {
	retryAt := e.RetryAt
	if retryAt.IsZero() {
		retryAt = nextPacificMidnight(now)
	}
	msg := "Provider: this account's daily sending limit at Gmail is used up; try again after " + retryAt.UTC().Format(time.RFC3339)
	prov := limits.MemberFailure
	if e.Reason == reasonDailyLimit {
		msg = "Provider: the relay's daily Gmail API quota is used up; try again after " + retryAt.UTC().Format(time.RFC3339)
		prov = limits.Failure
	}
	return &httpsend.Failure{
		Err:     &transport.Error{Kind: transport.KindProvider, Err: e, RetryAt: retryAt, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: msg}},
		Account: limits.Failure, Provider: prov,
		Advice: "a daily Gmail quota is used up: lower the account's daily_message_limit below the Workspace sending limit, or for dailyLimitExceeded raise the project's quota in the Google Cloud console",
	}
}

// pacificTime is where Google resets daily quotas. The time zone database
// is embedded (time/tzdata), so it is there on hosts without one.
var pacificTime = func() *time.Location {
	loc, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		panic("gmailapi: the embedded time zone database lacks America/Los_Angeles: " + err.Error())
	}
	return loc
}()

// nextPacificMidnight is the next midnight in Pacific Time after now.
func nextPacificMidnight(now time.Time) time.Time {
	y, m, d := now.In(pacificTime).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, pacificTime)
}

// forbidden classifies a 403 that is no quota: the relay's token may not
// send as this account. Every message fails until an administrator acts,
// so the queue defers (KindAuth) while a direct client hears a 550.
func forbidden(e *apiError) *httpsend.Failure {
	f := &httpsend.Failure{Account: limits.Failure, Provider: limits.MemberFailure}
	reply := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}}
	switch e.Reason {
	case reasonInsufficientPermissions:
		reply.Message = "Provider: the relay's token for the sending account does not allow sending (insufficientPermissions)"
		f.Advice = "the token lacks the scope https://mail.google.com/ or https://www.googleapis.com/auth/gmail.send: authorize the account again with it (oauthrelay account authorize), or for a service account add the scope to its domain-wide delegation (Admin console → Security → API controls)"
	case reasonDomainPolicy:
		reply.Message = "Provider: the account's Google Workspace domain does not allow the relay's app to use Gmail (domainPolicy)"
		f.Advice = "a Workspace administrator must allow the app: Admin console → Security → API controls → App access control (trust the OAuth client), and keep the Gmail API enabled for the users"
	default:
		reply.Message = "Provider: the Gmail API denied the relay access to the sending account"
		f.Advice = "the token must act for this very address: a refresh token obtained by signing in as the account, or a service account with domain-wide delegation impersonating it"
	}
	f.Err = &transport.Error{Kind: transport.KindAuth, Err: e, Reply: reply}
	return f
}
