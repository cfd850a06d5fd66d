package devsandbox

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The sandbox's Microsoft Graph mail endpoint, on the token endpoint's
// HTTPS server. What it does follows Microsoft's documentation of
// user: sendMail, message: send, "Send Outlook messages in MIME format",
// "Attach large files to Outlook messages" and "Microsoft Graph error
// responses", as remembered when this was written; error codes and
// messages marked "from memory" below are the ones seen from Graph, not
// quoted from a page.
//
//	POST /v1.0/users/{address}/sendMail                                    text/plain, base64 MIME → 202
//	POST /v1.0/users/{address}/messages                                    text/plain, base64 MIME → 201 draft {"id"}
//	POST /v1.0/users/{address}/messages/{id}/attachments                   fileAttachment JSON → 201
//	POST /v1.0/users/{address}/messages/{id}/attachments/createUploadSession → 201 {"uploadUrl"}
//	PUT  {uploadUrl}                                                       Content-Range chunks → 200, last 201
//	POST /v1.0/users/{address}/messages/{id}/send                          → 202
//	DELETE /v1.0/users/{address}/messages/{id}                             → 204

// Graph's documented limits.
const (
	// GraphScope is the app-only scope of Graph tokens.
	GraphScope = "https://graph.microsoft.com/.default"
	// GraphMailSendScope is the delegated scope that allows sending.
	GraphMailSendScope = "https://graph.microsoft.com/Mail.Send"
	// GraphMaxRequestBytes is Graph's request body limit (413 beyond).
	GraphMaxRequestBytes = 4 << 20
	// GraphMinUploadSession and GraphMaxAttachment bound the attachments
	// an upload session takes: smaller ones are POSTed whole. Microsoft
	// says "between 3 MB and 150 MB"; the minimum Graph enforces was
	// measured at 2 MiB (msgraph-sdk-java#52), and a POSTed attachment
	// is bounded by the 4 MB request limit (about 3 MiB of content).
	GraphMinUploadSession = 2 << 20
	GraphMaxAttachment    = 150 << 20
	// GraphMaxConcurrentPerMailbox is Graph's concurrency limit per
	// mailbox; the next request gets 429 with Retry-After.
	GraphMaxConcurrentPerMailbox = 4
)

// GraphError is an error answer of the Graph endpoint:
// {"error":{"code":Code,"message":Message,"innerError":{...}}}.
type GraphError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds, sent as Retry-After when > 0
}

// Scriptable Graph errors. The codes are the ones Graph documents for mail;
// statuses and messages are from memory (ErrorSendAsDenied's 403 and
// message were checked against reports of it).
var (
	GraphSendAsDenied = GraphError{Status: http.StatusForbidden, Code: "ErrorSendAsDenied",
		Message: "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message."}
	GraphAccessDenied = GraphError{Status: http.StatusForbidden, Code: "ErrorAccessDenied",
		Message: "Access is denied. Check credentials and try again."}
	GraphMailboxNotEnabled = GraphError{Status: http.StatusNotFound, Code: "MailboxNotEnabledForRESTAPI",
		Message: "REST API is not yet supported for this mailbox."}
	// GraphMessageSizeExceeded: the status (400) is not certain.
	GraphMessageSizeExceeded = GraphError{Status: http.StatusBadRequest, Code: "ErrorMessageSizeExceeded",
		Message: "The message exceeds the maximum supported size., Cannot save changes made to an item to store."}
	GraphUnavailable = GraphError{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable",
		Message: "Service unavailable. Please try again later."}
)

// GraphPass in a FailNextAt script lets that request through, so that a
// later one fails.
var GraphPass = GraphError{}

// GraphDropConnection is a scripted failure that closes the connection
// after reading the request, without an answer.
var GraphDropConnection = GraphError{Status: -1}

// GraphOp names a request of the Graph endpoint, for FailNextAt.
type GraphOp string

const (
	GraphOpSendMail            GraphOp = "sendMail"
	GraphOpCreateDraft         GraphOp = "createDraft"
	GraphOpAddAttachment       GraphOp = "addAttachment"
	GraphOpCreateUploadSession GraphOp = "createUploadSession"
	GraphOpUploadChunk         GraphOp = "uploadChunk"
	GraphOpSendDraft           GraphOp = "sendDraft"
	GraphOpDeleteDraft         GraphOp = "deleteDraft"
)

// GraphThrottled is Graph's 429 with Retry-After seconds.
func GraphThrottled(retryAfter int) GraphError {
	return GraphError{Status: http.StatusTooManyRequests, Code: "ApplicationThrottled",
		Message: "Application is over its MailboxConcurrency limit.", RetryAfter: retryAfter}
}

// GraphServer is the sandbox's Graph mail endpoint.
type GraphServer struct {
	// URL stands for https://graph.microsoft.com: requests go to
	// URL + "/v1.0/users/{address}/sendMail".
	URL string

	tokens *TokenServer
	log    hclog.Logger

	mu       sync.Mutex
	messages []Message
	drafts   map[string]*graphDraft
	uploads  map[string]*graphUpload
	failures *failures[GraphError]
	// opFailures are scripted per mailbox and operation, keyed
	// "mailbox op"; they apply after the token and concurrency checks.
	opFailures *failures[GraphError]
	ranges     []string       // Content-Range of every upload PUT accepted
	requests   map[string]int // "mailbox op" → requests admitted
	sendAs     map[string]map[string]bool
	maxSize    map[string]int
	door       *mailboxDoor
}

type graphDraft struct {
	mailbox     string
	mime        []byte
	attachments []graphAttachment
}

type graphAttachment struct {
	name, contentType, contentID string
	inline                       bool
	data                         []byte
}

type graphUpload struct {
	mailbox, draftID, authtoken string
	att                         graphAttachment
	size                        int
	expires                     time.Time
}

func newGraphServer(base string, tokens *TokenServer, log hclog.Logger) *GraphServer {
	return &GraphServer{
		URL: base, tokens: tokens, log: log,
		drafts:     map[string]*graphDraft{},
		uploads:    map[string]*graphUpload{},
		failures:   newFailures[GraphError](),
		opFailures: newFailures[GraphError](),
		sendAs:     map[string]map[string]bool{},
		maxSize:    map[string]int{},
		door:       newMailboxDoor(GraphMaxConcurrentPerMailbox),
	}
}

func (g *GraphServer) register(mux *http.ServeMux) {
	const users = "/v1.0/users/{address}"
	mux.HandleFunc("POST "+users+"/sendMail", g.mailbox(GraphOpSendMail, g.handleSendMail))
	mux.HandleFunc("POST "+users+"/messages", g.mailbox(GraphOpCreateDraft, g.handleCreateDraft))
	mux.HandleFunc("POST "+users+"/messages/{id}/attachments", g.mailbox(GraphOpAddAttachment, g.handleAddAttachment))
	mux.HandleFunc("POST "+users+"/messages/{id}/attachments/createUploadSession", g.mailbox(GraphOpCreateUploadSession, g.handleCreateUploadSession))
	mux.HandleFunc("POST "+users+"/messages/{id}/send", g.mailbox(GraphOpSendDraft, g.handleSendDraft))
	mux.HandleFunc("DELETE "+users+"/messages/{id}", g.mailbox(GraphOpDeleteDraft, g.handleDeleteDraft))
	mux.HandleFunc("PUT /graph-upload/{session}", g.handleUploadChunk)
}

// FailNext makes the next requests for mailbox answer errs, in order.
func (g *GraphServer) FailNext(mailbox string, errs ...GraphError) {
	g.failures.failNext(mailbox, errs...)
}

// FailNextAt makes the next requests of operation op for mailbox answer
// errs, in order (GraphDropConnection: no answer), once the request has
// passed the token and concurrency checks.
func (g *GraphServer) FailNextAt(mailbox string, op GraphOp, errs ...GraphError) {
	g.opFailures.failNext(opKey(mailbox, op), errs...)
}

// opKey keys the scripts and counters of one operation of a mailbox.
func opKey(mailbox string, op GraphOp) string { return strings.ToLower(mailbox + " " + string(op)) }

func (g *GraphServer) count(mailbox string, op GraphOp) {
	g.mu.Lock()
	if g.requests == nil {
		g.requests = map[string]int{}
	}
	g.requests[opKey(mailbox, op)]++
	g.mu.Unlock()
}

// Requests returns how many requests of operation op for mailbox passed
// the token and concurrency checks (held ones included).
func (g *GraphServer) Requests(mailbox string, op GraphOp) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests[opKey(mailbox, op)]
}

// UploadRanges returns the Content-Range of every upload session PUT the
// sandbox accepted, in order.
func (g *GraphServer) UploadRanges() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.ranges...)
}

// FailAlways makes every request for mailbox answer e (nil clears it),
// such as GraphMailboxNotEnabled for a mailbox hosted on-premises.
func (g *GraphServer) FailAlways(mailbox string, e *GraphError) { g.failures.failAlways(mailbox, e) }

// GrantSendAs lets mailbox send messages whose From is address; without
// it such a message gets ErrorSendAsDenied, as from Exchange Online.
func (g *GraphServer) GrantSendAs(mailbox, address string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	mailbox = strings.ToLower(mailbox)
	if g.sendAs[mailbox] == nil {
		g.sendAs[mailbox] = map[string]bool{}
	}
	g.sendAs[mailbox][strings.ToLower(address)] = true
}

// SetMaxMessageSize sets the largest message mailbox may send (Exchange's
// MaxSendSize; by default GraphMaxAttachment); a larger one gets
// ErrorMessageSizeExceeded.
func (g *GraphServer) SetMaxMessageSize(mailbox string, n int) {
	g.mu.Lock()
	g.maxSize[strings.ToLower(mailbox)] = n
	g.mu.Unlock()
}

// HoldRequests makes admitted mailbox requests wait, counted as in flight,
// until release is called: tests fill a mailbox's concurrency this way.
func (g *GraphServer) HoldRequests() (release func()) { return g.door.holdRequests() }

// InFlight returns the number of requests for mailbox being served.
func (g *GraphServer) InFlight(mailbox string) int { n, _ := g.door.counts(mailbox); return n }

// PeakConcurrency returns the most requests for mailbox served at once.
func (g *GraphServer) PeakConcurrency(mailbox string) int { _, n := g.door.counts(mailbox); return n }

// Messages returns a copy of the messages sent.
func (g *GraphServer) Messages() []Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Message(nil), g.messages...)
}

// Drafts returns the number of drafts not sent yet.
func (g *GraphServer) Drafts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.drafts)
}

// mailbox wraps a handler of /v1.0/users/{address}/...: bearer token,
// access to the mailbox, its concurrency limit, scripted errors.
func (g *GraphServer) mailbox(op GraphOp, h func(w http.ResponseWriter, r *http.Request, mailbox string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mailbox := strings.ToLower(r.PathValue("address"))
		if e, ok := g.authorize(r, mailbox); !ok {
			writeGraphError(w, e)
			return
		}
		leave, held, ok := g.door.enter(mailbox)
		if !ok {
			// Graph counts concurrent requests per mailbox and app.
			writeGraphError(w, GraphThrottled(1))
			return
		}
		defer leave()
		g.count(mailbox, op)
		if !waitWhileHeld(held, r) {
			return
		}
		if e, ok := g.failures.take(mailbox); ok {
			writeGraphError(w, e)
			return
		}
		if e, ok := g.opFailures.take(opKey(mailbox, op)); ok && e != GraphPass {
			failRequest(w, r, e)
			return
		}
		h(w, r, mailbox)
	}
}

// authorize checks the bearer token. The 401 codes and messages are from
// memory of Graph's answers.
func (g *GraphServer) authorize(r *http.Request, mailbox string) (GraphError, bool) {
	unauth := func(msg string) (GraphError, bool) {
		return GraphError{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken", Message: msg}, false
	}
	grant, state := g.tokens.inspect(bearerToken(r.Header.Get("Authorization")))
	switch state {
	case tokenMissing:
		return unauth("Access token is empty.")
	case tokenUnknown:
		return unauth("Access token validation failure.")
	case tokenExpired:
		return unauth("Lifetime validation failed, the token is expired.")
	}
	if !hasGraphAudience(grant.Scope) {
		return unauth("Access token validation failure. Invalid audience.")
	}
	if !hasScope(grant.Scope, GraphScope, GraphMailSendScope) {
		return GraphAccessDenied, false
	}
	if grant.User != AppOnly && grant.User != mailbox {
		// A delegated token reaches its own mailbox only.
		return GraphAccessDenied, false
	}
	return GraphError{}, true
}

func hasGraphAudience(scopes string) bool {
	for _, s := range strings.Fields(scopes) {
		if strings.HasPrefix(s, "https://graph.microsoft.com/") {
			return true
		}
	}
	return false
}

// readGraphBody reads a request body within Graph's 4 MB limit.
func readGraphBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	tooLarge := GraphError{Status: http.StatusRequestEntityTooLarge, Code: "RequestBodyTooLarge",
		Message: "The maximum request length supported is 4MB."} // code and message from memory
	body, over, err := readLimited(r, GraphMaxRequestBytes)
	if over {
		writeGraphError(w, tooLarge)
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	return body, true
}

// readMIMEBody reads a text/plain base64 MIME request body.
func readMIMEBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/plain" {
		// Graph also takes JSON messages; the sandbox takes MIME only.
		writeGraphError(w, GraphError{Status: http.StatusUnsupportedMediaType, Code: "UnsupportedMediaType",
			Message: "The sandbox accepts MIME messages only (Content-Type: text/plain, base64)."})
		return nil, false
	}
	body, ok := readGraphBody(w, r)
	if !ok {
		return nil, false
	}
	clean := strings.Map(func(c rune) rune {
		if c == '\r' || c == '\n' {
			return -1
		}
		return c
	}, string(body))
	raw, err := base64.StdEncoding.DecodeString(clean)
	if err != nil || len(raw) == 0 {
		// Documented for malformed MIME content.
		writeGraphError(w, GraphError{Status: http.StatusBadRequest, Code: "ErrorMimeContentInvalidBase64String",
			Message: "Invalid base64 string for MIME content."})
		return nil, false
	}
	return raw, true
}

func (g *GraphServer) handleSendMail(w http.ResponseWriter, r *http.Request, mailbox string) {
	raw, ok := readMIMEBody(w, r)
	if !ok {
		return
	}
	if e, ok := g.send(mailbox, raw); !ok {
		writeGraphError(w, e)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// send checks and records a message mailbox sends.
func (g *GraphServer) send(mailbox string, raw []byte) (GraphError, bool) {
	sub, err := parseSubmission(raw, "sandbox.graph.test")
	if err != nil {
		return GraphError{Status: http.StatusBadRequest, Code: "ErrorMimeContentInvalid", Message: "The MIME content is invalid: " + err.Error()}, false
	}
	if len(sub.recipients) == 0 {
		// From memory.
		return GraphError{Status: http.StatusBadRequest, Code: "ErrorInvalidRecipients",
			Message: "At least one recipient isn't valid., A message can't be sent because it contains no recipients."}, false
	}
	if sub.from == "" {
		// Exchange sends as the mailbox when the message names no sender.
		sub.from = mailbox
		sub.data = append([]byte("From: <"+mailbox+">\r\n"), sub.data...)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !strings.EqualFold(sub.from, mailbox) && !g.sendAs[mailbox][strings.ToLower(sub.from)] {
		return GraphSendAsDenied, false
	}
	limit, ok := g.maxSize[mailbox]
	if !ok {
		limit = GraphMaxAttachment
	}
	if len(sub.data) > limit {
		return GraphMessageSizeExceeded, false
	}
	m := Message{ID: randomHex(6), User: mailbox, From: sub.from, To: sub.recipients, Size: len(sub.data),
		Subject: sub.subject, Received: time.Now(), Data: sub.data}
	g.messages = append(g.messages, m)
	g.log.Info("sandbox Graph mailbox sent a message", "sandbox_id", m.ID, "as", m.User, "from", m.From, "to", strings.Join(m.To, ","), "size", m.Size, "subject", m.Subject)
	return GraphError{}, true
}

func (g *GraphServer) handleCreateDraft(w http.ResponseWriter, r *http.Request, mailbox string) {
	raw, ok := readMIMEBody(w, r)
	if !ok {
		return
	}
	if _, err := parseSubmission(raw, "sandbox.graph.test"); err != nil {
		writeGraphError(w, GraphError{Status: http.StatusBadRequest, Code: "ErrorMimeContentInvalid", Message: "The MIME content is invalid: " + err.Error()})
		return
	}
	id := "AAMkAGsandbox" + randomHex(16)
	g.mu.Lock()
	g.drafts[id] = &graphDraft{mailbox: mailbox, mime: canonicalCRLF(raw)}
	g.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"@odata.context": g.URL + "/v1.0/$metadata#users('" + mailbox + "')/messages/$entity",
		"id":             id,
		"isDraft":        true,
		"subject":        subjectOf(canonicalCRLF(raw)),
	})
}

// draft returns the draft {id} of mailbox, or answers 404.
func (g *GraphServer) draft(w http.ResponseWriter, r *http.Request, mailbox string) (*graphDraft, bool) {
	g.mu.Lock()
	d, ok := g.drafts[r.PathValue("id")]
	g.mu.Unlock()
	if !ok || d.mailbox != mailbox {
		// From memory: Exchange's answer for an unknown item id.
		writeGraphError(w, GraphError{Status: http.StatusNotFound, Code: "ErrorItemNotFound",
			Message: "The specified object was not found in the store."})
		return nil, false
	}
	return d, true
}

type attachmentItem struct {
	ODataType    string `json:"@odata.type"`
	Type         string `json:"attachmentType"`
	Name         string `json:"name"`
	Size         int    `json:"size"`
	ContentType  string `json:"contentType"`
	ContentBytes string `json:"contentBytes"`
	IsInline     bool   `json:"isInline"`
	ContentID    string `json:"contentId"`
}

func badRequest(msg string) GraphError {
	return GraphError{Status: http.StatusBadRequest, Code: "ErrorInvalidRequest", Message: msg}
}

// handleAddAttachment attaches a file under 3 MB, given whole as a
// fileAttachment.
func (g *GraphServer) handleAddAttachment(w http.ResponseWriter, r *http.Request, mailbox string) {
	d, ok := g.draft(w, r, mailbox)
	if !ok {
		return
	}
	body, ok := readGraphBody(w, r)
	if !ok {
		return
	}
	var a attachmentItem
	if err := json.Unmarshal(body, &a); err != nil || a.ODataType != "#microsoft.graph.fileAttachment" || a.Name == "" {
		writeGraphError(w, badRequest("Expected a #microsoft.graph.fileAttachment with a name."))
		return
	}
	data, err := base64.StdEncoding.DecodeString(a.ContentBytes)
	if err != nil {
		writeGraphError(w, badRequest("contentBytes is not base64."))
		return
	}
	id := "AAMkAGatt" + randomHex(12)
	g.mu.Lock()
	d.attachments = append(d.attachments, graphAttachment{name: a.Name, contentType: a.ContentType, contentID: a.ContentID, inline: a.IsInline, data: data})
	g.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"@odata.type": "#microsoft.graph.fileAttachment", "id": id, "name": a.Name, "size": len(data)})
}

func (g *GraphServer) handleCreateUploadSession(w http.ResponseWriter, r *http.Request, mailbox string) {
	if _, ok := g.draft(w, r, mailbox); !ok {
		return
	}
	body, ok := readGraphBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Item attachmentItem `json:"AttachmentItem"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Item.Type != "file" || req.Item.Name == "" {
		writeGraphError(w, badRequest("Expected an AttachmentItem of attachmentType file with a name and size."))
		return
	}
	switch {
	case req.Item.Size < GraphMinUploadSession:
		// From memory: smaller files are to be POSTed whole.
		writeGraphError(w, GraphError{Status: http.StatusBadRequest, Code: "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
			Message: "Attachment size must be greater than the minimum size."})
		return
	case req.Item.Size > GraphMaxAttachment:
		writeGraphError(w, GraphMessageSizeExceeded)
		return
	}
	sid, authtoken := randomHex(12), randomHex(24)
	expires := time.Now().Add(15 * time.Minute)
	g.mu.Lock()
	g.uploads[sid] = &graphUpload{mailbox: mailbox, draftID: r.PathValue("id"), authtoken: authtoken, size: req.Item.Size, expires: expires,
		att: graphAttachment{name: req.Item.Name, contentType: req.Item.ContentType, contentID: req.Item.ContentID, inline: req.Item.IsInline}}
	g.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"@odata.context":     g.URL + "/v1.0/$metadata#microsoft.graph.uploadSession",
		"uploadUrl":          g.URL + "/graph-upload/" + sid + "?authtoken=" + authtoken,
		"expirationDateTime": expires.UTC().Format(time.RFC3339),
		"nextExpectedRanges": []string{"0-"},
	})
}

// handleUploadChunk takes one byte range of an upload session. The upload
// URL is pre-authenticated: Microsoft's documentation says not to send an
// Authorization header to it, and the sandbox refuses one, so that a
// client cannot leak its Graph token to the upload host.
func (g *GraphServer) handleUploadChunk(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("session")
	g.mu.Lock()
	up, ok := g.uploads[sid]
	ok = ok && r.URL.Query().Get("authtoken") == up.authtoken && time.Now().Before(up.expires)
	g.mu.Unlock()
	if !ok {
		writeGraphError(w, GraphError{Status: http.StatusNotFound, Code: "ErrorItemNotFound", Message: "The upload session does not exist or has expired."})
		return
	}
	if r.Header.Get("Authorization") != "" {
		writeGraphError(w, GraphError{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken",
			Message: "The upload URL is pre-authenticated; send no Authorization header."})
		return
	}
	g.count(up.mailbox, GraphOpUploadChunk)
	if e, ok := g.opFailures.take(opKey(up.mailbox, GraphOpUploadChunk)); ok && e != GraphPass {
		failRequest(w, r, e)
		return
	}
	start, end, total, ok := parseContentRange(r.Header.Get("Content-Range"))
	g.mu.Lock()
	received := len(up.att.data)
	g.mu.Unlock()
	switch {
	case !ok || total != up.size || end >= total:
		writeGraphError(w, badRequest("Content-Range must be bytes start-end/size of the attachment."))
		return
	case start != received:
		writeGraphError(w, GraphError{Status: http.StatusRequestedRangeNotSatisfiable, Code: "ErrorInvalidRange",
			Message: "The next expected range starts at " + strconv.Itoa(received) + "."})
		return
	}
	body, ok := readGraphBody(w, r)
	if !ok {
		return
	}
	if len(body) != end-start+1 {
		writeGraphError(w, badRequest("The body length does not match Content-Range."))
		return
	}
	g.uploadDone(w, sid, up, start, body)
}

func (g *GraphServer) uploadDone(w http.ResponseWriter, sid string, up *graphUpload, start int, chunk []byte) {
	g.mu.Lock()
	if len(up.att.data) != start { // a concurrent PUT of the same range won
		g.mu.Unlock()
		writeGraphError(w, GraphError{Status: http.StatusRequestedRangeNotSatisfiable, Code: "ErrorInvalidRange", Message: "The range was already uploaded."})
		return
	}
	up.att.data = append(up.att.data, chunk...)
	g.ranges = append(g.ranges, fmt.Sprintf("bytes %d-%d/%d", start, start+len(chunk)-1, up.size))
	up.expires = time.Now().Add(15 * time.Minute) // each chunk extends the session
	n := len(up.att.data)
	if n < up.size {
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"expirationDateTime": up.expires.UTC().Format(time.RFC3339),
			"nextExpectedRanges": []string{strconv.Itoa(n)},
		})
		return
	}
	delete(g.uploads, sid)
	d, ok := g.drafts[up.draftID]
	if ok {
		d.attachments = append(d.attachments, up.att)
	}
	g.mu.Unlock()
	if !ok {
		writeGraphError(w, GraphError{Status: http.StatusNotFound, Code: "ErrorItemNotFound", Message: "The specified object was not found in the store."})
		return
	}
	aid := "AAMkAGatt" + randomHex(12)
	w.Header().Set("Location", g.URL+"/v1.0/Users('"+up.mailbox+"')/Messages('"+up.draftID+"')/Attachments('"+aid+"')")
	w.WriteHeader(http.StatusCreated)
}

// parseContentRange parses "bytes start-end/total" (RFC 9110 §14.4).
func parseContentRange(v string) (start, end, total int, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	s, e, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	start, err1 = strconv.Atoi(s)
	end, err2 = strconv.Atoi(e)
	total, err3 = strconv.Atoi(tot)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

func (g *GraphServer) handleSendDraft(w http.ResponseWriter, r *http.Request, mailbox string) {
	d, ok := g.draft(w, r, mailbox)
	if !ok {
		return
	}
	g.mu.Lock()
	raw := withAttachments(d.mime, d.attachments)
	g.mu.Unlock()
	if e, ok := g.send(mailbox, raw); !ok {
		writeGraphError(w, e)
		return
	}
	g.mu.Lock()
	delete(g.drafts, r.PathValue("id")) // sent: it moves to Sent Items
	g.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// failRequest answers a scripted failure; GraphDropConnection reads the
// request whole and closes the connection without an answer.
func failRequest(w http.ResponseWriter, r *http.Request, e GraphError) {
	if e == GraphDropConnection {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 256<<20))
		panic(http.ErrAbortHandler)
	}
	writeGraphError(w, e)
}

// handleDeleteDraft deletes a draft and any upload session still open
// for it (Microsoft Graph: message delete → 204 No Content).
func (g *GraphServer) handleDeleteDraft(w http.ResponseWriter, r *http.Request, mailbox string) {
	if _, ok := g.draft(w, r, mailbox); !ok {
		return
	}
	id := r.PathValue("id")
	g.mu.Lock()
	delete(g.drafts, id)
	for sid, up := range g.uploads {
		if up.draftID == id {
			delete(g.uploads, sid)
		}
	}
	g.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// writeGraphError writes Graph's error format, with the innerError Graph
// adds (date and request IDs).
func writeGraphError(w http.ResponseWriter, e GraphError) {
	reqID := uuidLike()
	w.Header().Set("request-id", reqID)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == http.StatusUnauthorized {
		// From memory of Graph's challenge (RFC 6750 §3).
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
	}
	writeJSON(w, e.Status, map[string]any{"error": map[string]any{
		"code":    e.Code,
		"message": e.Message,
		"innerError": map[string]string{
			"date":              time.Now().UTC().Format("2006-01-02T15:04:05"),
			"request-id":        reqID,
			"client-request-id": reqID,
		},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func uuidLike() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
