package devsandbox

import (
	"embed"
	"html/template"
	"mime"
	"net/http"
	"slices"
	"strings"
)

// The sandbox's mail catcher: what the SMTP server accepted, on the relay's
// telemetry address in dev mode.
//
//	GET /dev/                     HTML inbox, newest first
//	GET /dev/messages             JSON list without bodies (kept stable for scripts)
//	GET /dev/messages/{id}        the message as received, as text/plain
//	GET /dev/messages/{id}.eml    the same bytes as a message/rfc822 download

//go:embed web_inbox.html
var webFiles embed.FS

var inboxPage = template.Must(template.New("web_inbox.html").Funcs(template.FuncMap{
	"decodeHeader": decodeHeader,
	"join":         strings.Join,
}).ParseFS(webFiles, "web_inbox.html"))

// inboxCSP forbids scripts and every external resource, so a hostile message
// cannot make the inbox run code or call home even if escaping failed.
const inboxCSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Message returns the accepted message with the given ID.
func (s *SMTPServer) Message(id string) (Message, bool) {
	for _, m := range s.Messages() {
		if m.ID == id {
			return m, true
		}
	}
	return Message{}, false
}

// WebHandler serves the mail catcher under /dev/. Mount it on "GET /dev/".
func (s *SMTPServer) WebHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dev/{$}", s.serveInbox)
	mux.HandleFunc("GET /dev/messages", s.serveMessageList)
	mux.HandleFunc("GET /dev/messages/{name}", s.serveMessage)
	return mux
}

func (s *SMTPServer) serveMessageList(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	list := s.MessagesJSON()
	if string(list) == "null" {
		// An empty inbox is an empty list, so that scripts can iterate it.
		list = []byte("[]")
	}
	_, _ = w.Write(list)
}

func (s *SMTPServer) serveInbox(w http.ResponseWriter, _ *http.Request) {
	msgs := s.Messages()
	slices.Reverse(msgs)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", inboxCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err := inboxPage.Execute(w, msgs); err != nil {
		s.log.Warn("rendering the sandbox inbox", "error", err)
	}
}

// serveMessage answers /dev/messages/{id} with the raw message as text and
// /dev/messages/{id}.eml with the same bytes as a download.
func (s *SMTPServer) serveMessage(w http.ResponseWriter, r *http.Request) {
	id, download := strings.CutSuffix(r.PathValue("name"), ".eml")
	m, ok := s.Message(id)
	if !ok {
		http.Error(w, "no message with this ID in the sandbox", http.StatusNotFound)
		return
	}
	// nosniff: a browser must show the text, never guess it is HTML.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if download {
		w.Header().Set("Content-Type", "message/rfc822")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": m.ID + ".eml"}))
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	_, _ = w.Write(m.Data)
}

// decodeHeader shows RFC 2047 encoded words as text; an undecodable value
// is shown as it was received.
func decodeHeader(v string) string {
	decoded, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		return v
	}
	return decoded
}
