package devsandbox

import (
	"io"
	"mime"
	"net/http"
	"net/mail"
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
// 35 MB, message/*), of the Gmail API's errors ("Resolve errors") and
// usage limits, and of the Google APIs error format; reasons and messages
// marked "from memory" are the ones seen from Google, not quoted from a
// page. Like Gmail it sends to the To, Cc and Bcc header fields, delivers
// the message without Bcc, and sends as the user: a From that is neither
// the user nor one of its send-as aliases is replaced by the user's
// address (from memory: Gmail rewrites it rather than refusing).

// Gmail API limits and scopes.
const (
	// GmailMaxUploadBytes is the media upload limit of messages.send.
	GmailMaxUploadBytes = 35 << 20
	// GmailScope is the full-access scope; GmailSendScope allows sending
	// only.
	GmailScope     = "https://mail.google.com/"
	GmailSendScope = "https://www.googleapis.com/auth/gmail.send"
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
	sendAs   map[string]map[string]bool
	door     *mailboxDoor
}

func newGmailAPIServer(base string, tokens *TokenServer, log hclog.Logger) *GmailAPIServer {
	return &GmailAPIServer{URL: base, tokens: tokens, log: log, failures: newFailures[GmailError](),
		sendAs: map[string]map[string]bool{}, door: newMailboxDoor(0)}
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

// AddSendAs makes alias one of user's send-as addresses (Gmail's "Send
// mail as"): a message from it keeps its From.
func (s *GmailAPIServer) AddSendAs(user, alias string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	user = strings.ToLower(user)
	if s.sendAs[user] == nil {
		s.sendAs[user] = map[string]bool{}
	}
	s.sendAs[user][strings.ToLower(alias)] = true
}

// SetMaxConcurrent makes requests for a user beyond n in flight answer
// 429 "Too many concurrent requests for user" (0, the default: no
// limit). Google enforces such a limit per user but does not publish it.
func (s *GmailAPIServer) SetMaxConcurrent(n int) { s.door.setMax(n) }

// HoldRequests makes admitted requests wait, counted as in flight, until
// release is called: tests fill a user's concurrency this way.
func (s *GmailAPIServer) HoldRequests() (release func()) { return s.door.holdRequests() }

// InFlight returns the number of requests for user being served.
func (s *GmailAPIServer) InFlight(user string) int { n, _ := s.door.counts(user); return n }

// PeakConcurrency returns the most requests for user served at once.
func (s *GmailAPIServer) PeakConcurrency(user string) int { _, n := s.door.counts(user); return n }

// Messages returns a copy of the messages sent.
func (s *GmailAPIServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

func (s *GmailAPIServer) handleSend(w http.ResponseWriter, r *http.Request) {
	mailbox, e, ok := s.authorize(r)
	if !ok {
		refuseGmail(w, r, e)
		return
	}
	leave, held, ok := s.door.enter(mailbox)
	if !ok {
		refuseGmail(w, r, GmailTooManyConcurrent)
		return
	}
	defer leave()
	if !waitWhileHeld(held, r) {
		return
	}
	if e, ok := s.failures.take(mailbox); ok {
		refuseGmail(w, r, e)
		return
	}
	if e, ok := checkMediaUpload(r); !ok {
		refuseGmail(w, r, e)
		return
	}
	raw, ok := readGmailBody(w, r)
	if !ok {
		return
	}
	m, e, ok := s.send(mailbox, raw)
	if !ok {
		writeGmailError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": m.ID, "threadId": m.ID, "labelIds": []string{"SENT"}})
}

// checkMediaUpload checks the upload protocol and the media type.
func checkMediaUpload(r *http.Request) (GmailError, bool) {
	if ut := r.URL.Query().Get("uploadType"); ut != "media" {
		// The sandbox implements the simple media upload only.
		return GmailError{Status: http.StatusBadRequest, Reason: "badRequest", Message: "uploadType must be media (got " + strconv.Quote(ut) + ")."}, false
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); !strings.HasPrefix(mt, "message/") {
		// From memory.
		return GmailError{Status: http.StatusBadRequest, Reason: "badContent",
			Message: "Media type '" + mt + "' is not supported. Valid media types: [message/*]"}, false
	}
	return GmailError{}, true
}

// send checks and records a message mailbox sends.
func (s *GmailAPIServer) send(mailbox string, raw []byte) (Message, GmailError, bool) {
	sub, err := parseSubmission(raw, "mail.gmail.com")
	if err != nil {
		return Message{}, GmailError{Status: http.StatusBadRequest, Reason: "invalidArgument", Message: "Invalid message: " + err.Error()}, false
	}
	if len(sub.recipients) == 0 {
		return Message{}, GmailError{Status: http.StatusBadRequest, Reason: "invalidArgument", Message: "Recipient address required"}, false // from memory
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !strings.EqualFold(sub.from, mailbox) && !s.sendAs[mailbox][strings.ToLower(sub.from)] {
		sub.data = replaceFrom(sub.data, mailbox)
		sub.from = mailbox
	}
	m := Message{ID: randomHex(8), User: mailbox, From: sub.from, To: sub.recipients, Size: len(sub.data),
		Subject: sub.subject, Received: time.Now(), Data: sub.data}
	s.messages = append(s.messages, m)
	s.log.Info("sandbox Gmail API mailbox sent a message", "sandbox_id", m.ID, "as", m.User, "from", m.From, "to", strings.Join(m.To, ","), "size", m.Size, "subject", m.Subject)
	return m, GmailError{}, true
}

// replaceFrom makes user the From of a message (CRLF form), keeping the
// display name of the From it replaces.
func replaceFrom(data []byte, user string) []byte {
	from := &mail.Address{Address: user}
	if msg, err := mail.ReadMessage(strings.NewReader(string(data))); err == nil {
		if list, err := msg.Header.AddressList("From"); err == nil && len(list) > 0 {
			from.Name = list[0].Name
		}
	}
	return append([]byte("From: "+from.String()+"\r\n"), removeHeaderField(data, "From")...)
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

// refuseGmail answers an error before reading the upload: it reads the
// upload first (up to a bound), as Google's front end does, so that the
// client sees the answer rather than a connection reset while it writes.
func refuseGmail(w http.ResponseWriter, r *http.Request, e GmailError) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, GmailMaxUploadBytes+1<<20))
	writeGmailError(w, e)
}
