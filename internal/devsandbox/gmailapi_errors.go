package devsandbox

import (
	"net/http"
	"strconv"
	"time"
)

// GmailError is an error answer in Google's format:
// {"error":{"code":Status,"message":Message,"errors":[{"message","domain","reason"}],"status":...}}.
type GmailError struct {
	Status  int
	Reason  string
	Message string
	// Domain is the error's domain ("usageLimits"); "" is "global".
	Domain     string
	RetryAfter int // seconds, sent as Retry-After when > 0
}

// Scriptable Gmail API errors. The reasons, statuses and the domain of
// dailyLimitExceeded are those of Google's "Resolve errors" guide;
// messages not quoted there are from memory.
var (
	GmailInsufficientPermissions = GmailError{Status: http.StatusForbidden, Reason: "insufficientPermissions",
		Message: "Request had insufficient authentication scopes."}
	GmailDomainPolicy = GmailError{Status: http.StatusForbidden, Reason: "domainPolicy",
		Message: "The domain administrators have disabled Gmail apps."}
	GmailDailyLimitExceeded = GmailError{Status: http.StatusForbidden, Reason: "dailyLimitExceeded", Domain: "usageLimits",
		Message: "Daily Limit Exceeded"}
	GmailRateLimitExceeded = GmailError{Status: http.StatusTooManyRequests, Reason: "rateLimitExceeded",
		Message: "Rate Limit Exceeded"}
	GmailUserRateLimitExceeded = GmailError{Status: http.StatusTooManyRequests, Reason: "userRateLimitExceeded",
		Message: "User-rate limit exceeded."}
	// GmailTooManyConcurrent is the answer beyond SetMaxConcurrent.
	GmailTooManyConcurrent = GmailError{Status: http.StatusTooManyRequests, Reason: "rateLimitExceeded",
		Message: "Too many concurrent requests for user"}
	GmailBackendError = GmailError{Status: http.StatusServiceUnavailable, Reason: "backendError",
		Message: "The service is currently unavailable."}
	// GmailMailServiceNotEnabled: the user has no Gmail (the service is
	// off for it, or the address is not a user's).
	GmailMailServiceNotEnabled = GmailError{Status: http.StatusBadRequest, Reason: "failedPrecondition",
		Message: "Mail service not enabled"}
	GmailInvalidToHeader = GmailError{Status: http.StatusBadRequest, Reason: "invalidArgument",
		Message: "Invalid To header"}
)

// GmailSendingLimitExceeded is the answer once a user exceeded Gmail's
// daily sending limit: 429 "User-rate limit exceeded" "(Mail sending)"
// with the time to retry (Google's guide; the wording is from memory).
func GmailSendingLimitExceeded(retry time.Time) GmailError {
	return GmailError{Status: http.StatusTooManyRequests, Reason: "rateLimitExceeded",
		Message: "User-rate limit exceeded.  Retry after " + retry.UTC().Format("2006-01-02T15:04:05.000Z") + " (Mail sending)"}
}

// googleStatus is the canonical status Google pairs with an HTTP status
// (google.rpc.Code).
func googleStatus(httpStatus int) string {
	switch httpStatus {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusRequestEntityTooLarge:
		return "OUT_OF_RANGE"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	}
	return "INTERNAL"
}

func writeGmailError(w http.ResponseWriter, e GmailError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	domain := e.Domain
	if domain == "" {
		domain = "global"
	}
	item := map[string]string{"message": e.Message, "domain": domain, "reason": e.Reason}
	if e.Status == http.StatusUnauthorized {
		item["location"], item["locationType"] = "Authorization", "header"
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	writeJSON(w, e.Status, map[string]any{"error": map[string]any{
		"code":    e.Status,
		"message": e.Message,
		"errors":  []map[string]string{item},
		"status":  googleStatus(e.Status),
	}})
}
