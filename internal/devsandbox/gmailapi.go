package devsandbox

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The sandbox's Gmail API endpoint, on the token endpoint's HTTPS server:
//
//	POST /upload/gmail/v1/users/{address}/messages/send?uploadType=media   message/rfc822 → 200 {"id","threadId","labelIds"}
//
// It follows Google's documentation of users.messages.send (media upload,
// 35 MB, message/*) and of the Google APIs error format as remembered when
// this was written; reasons and messages marked "from memory" are the ones
// seen from Google, not quoted from a page.

// Gmail API limits and scopes.
const (
	// GmailMaxUploadBytes is the media upload limit of messages.send.
	GmailMaxUploadBytes = 35 << 20
	// GmailScope is the full-access scope; GmailSendScope allows sending
	// only.
	GmailScope     = "https://mail.google.com/"
	GmailSendScope = "https://www.googleapis.com/auth/gmail.send"
)

// GmailError is an error answer in Google's format:
// {"error":{"code":Status,"message":Message,"errors":[{"message","domain":"global","reason":Reason}],"status":...}}.
type GmailError struct {
	Status     int
	Reason     string
	Message    string
	RetryAfter int // seconds, sent as Retry-After when > 0
}

// Scriptable Gmail API errors (reasons and messages from memory).
var (
	GmailInsufficientPermissions = GmailError{Status: http.StatusForbidden, Reason: "insufficientPermissions",
		Message: "Request had insufficient authentication scopes."}
	GmailDomainPolicy = GmailError{Status: http.StatusForbidden, Reason: "domainPolicy",
		Message: "The domain administrators have disabled Gmail apps."}
	GmailRateLimitExceeded = GmailError{Status: http.StatusTooManyRequests, Reason: "rateLimitExceeded",
		Message: "Rate Limit Exceeded"}
	GmailUserRateLimitExceeded = GmailError{Status: http.StatusTooManyRequests, Reason: "userRateLimitExceeded",
		Message: "User-rate limit exceeded."}
	GmailBackendError = GmailError{Status: http.StatusServiceUnavailable, Reason: "backendError",
		Message: "The service is currently unavailable."}
)

// GmailAPIServer is the sandbox's Gmail API endpoint.
type GmailAPIServer struct {
	// URL stands for https://gmail.googleapis.com: requests go to
	// URL + "/upload/gmail/v1/users/{address}/messages/send?uploadType=media".
	URL string

	tokens *TokenServer
	log    hclog.Logger

	mu       sync.Mutex
	messages []Message
	failures *failures[GmailError]
}

func newGmailAPIServer(base string, tokens *TokenServer, log hclog.Logger) *GmailAPIServer {
	return &GmailAPIServer{URL: base, tokens: tokens, log: log, failures: newFailures[GmailError]()}
}

func (s *GmailAPIServer) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /upload/gmail/v1/users/{address}/messages/send", s.handleSend)
}

// FailNext makes the next sends of mailbox answer errs, in order.
func (s *GmailAPIServer) FailNext(mailbox string, errs ...GmailError) {
	s.failures.failNext(mailbox, errs...)
}

// FailAlways makes every send of mailbox answer e (nil clears it).
func (s *GmailAPIServer) FailAlways(mailbox string, e *GmailError) { s.failures.failAlways(mailbox, e) }

// Messages returns a copy of the messages sent.
func (s *GmailAPIServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

func (s *GmailAPIServer) handleSend(w http.ResponseWriter, r *http.Request) {
	mailbox, e, ok := s.authorize(r)
	if !ok {
		writeGmailError(w, e)
		return
	}
	if e, ok := s.failures.take(mailbox); ok {
		writeGmailError(w, e)
		return
	}
	if ut := r.URL.Query().Get("uploadType"); ut != "media" {
		// The sandbox implements the simple media upload only.
		writeGmailError(w, GmailError{Status: http.StatusBadRequest, Reason: "badRequest", Message: "uploadType must be media (got " + strconv.Quote(ut) + ")."})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); !strings.HasPrefix(mt, "message/") {
		// From memory.
		writeGmailError(w, GmailError{Status: http.StatusBadRequest, Reason: "badContent",
			Message: "Media type '" + mt + "' is not supported. Valid media types: [message/*]"})
		return
	}
	raw, ok := readGmailBody(w, r)
	if !ok {
		return
	}
	sub, err := parseSubmission(raw, "mail.gmail.com")
	if err != nil {
		writeGmailError(w, GmailError{Status: http.StatusBadRequest, Reason: "invalidArgument", Message: "Invalid message: " + err.Error()})
		return
	}
	if len(sub.recipients) == 0 {
		writeGmailError(w, GmailError{Status: http.StatusBadRequest, Reason: "invalidArgument", Message: "Recipient address required"}) // from memory
		return
	}
	if sub.from == "" {
		sub.from = mailbox
	}
	m := Message{ID: randomHex(8), User: mailbox, From: sub.from, To: sub.recipients, Size: len(sub.data),
		Subject: sub.subject, Received: time.Now(), Data: sub.data}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	s.log.Info("sandbox Gmail API mailbox sent a message", "sandbox_id", m.ID, "as", m.User, "from", m.From, "to", strings.Join(m.To, ","), "size", m.Size, "subject", m.Subject)
	writeJSON(w, http.StatusOK, map[string]any{"id": m.ID, "threadId": m.ID, "labelIds": []string{"SENT"}})
}

// authorize checks the bearer token and returns the mailbox ("me" is the
// token's user). 401/403 bodies from memory of Google's.
func (s *GmailAPIServer) authorize(r *http.Request) (string, GmailError, bool) {
	grant, state := s.tokens.inspect(bearerToken(r.Header.Get("Authorization")))
	if state != tokenValid {
		msg := "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."
		if state == tokenMissing {
			msg = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential."
		}
		return "", GmailError{Status: http.StatusUnauthorized, Reason: "authError", Message: msg}, false
	}
	if !hasScope(grant.Scope, GmailScope, GmailSendScope, "https://www.googleapis.com/auth/gmail.compose", "https://www.googleapis.com/auth/gmail.modify") {
		return "", GmailInsufficientPermissions, false
	}
	mailbox := strings.ToLower(r.PathValue("address"))
	if mailbox == "me" {
		mailbox = grant.User
	}
	if grant.User == AppOnly || grant.User != mailbox {
		// Google has no app-only mail access: a token acts for its user.
		return "", GmailError{Status: http.StatusForbidden, Reason: "forbidden", Message: "Delegation denied for " + grant.User}, false
	}
	return mailbox, GmailError{}, true
}

// readGmailBody reads a media upload within the 35 MB limit. The 413's
// reason is a guess: Google documents the limit, not the answer.
func readGmailBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	tooLarge := GmailError{Status: http.StatusRequestEntityTooLarge, Reason: "uploadTooLarge", Message: "The message exceeds the maximum upload size of 35 MB."}
	body, over, err := readLimited(r, GmailMaxUploadBytes)
	if over {
		writeGmailError(w, tooLarge)
		return nil, false
	}
	return body, err == nil
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
	item := map[string]string{"message": e.Message, "domain": "global", "reason": e.Reason}
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
