package gmailapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/gmailapi"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }
func (staticToken) Invalidate(string)                       {}

// TestBodyIsStreamed: the request carries the fitted message with an
// exact Content-Length, and sending 16 MiB allocates a small fraction of
// that: the message is streamed, not buffered.
func TestBodyIsStreamed(t *testing.T) {
	type seen struct {
		path, query, contentType, auth string
		contentLength, read            int64
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), r.ContentLength, n}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"18c0ffee","threadId":"18c0ffee","labelIds":["SENT"]}`)
	}))
	t.Cleanup(srv.Close)
	tr := &gmailapi.Transport{Mailbox: httpsend.Mailbox{Account: "Sender+x@gmail.test", BaseURL: srv.URL, Tokens: staticToken("at-1"), HTTP: srv.Client()}}
	header := crlf("From: sender@gmail.test\nTo: a@example.com\nSubject: s\n\n")
	msg := message(header + strings.Repeat("x", 16<<20))
	const bcc = "Bcc: <blind@example.com>\r\n"

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := deliver(t, tr, transport.MailOptions{}, []string{"a@example.com", "blind@example.com"}, msg)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	want := seen{path: "/upload/gmail/v1/users/Sender+x@gmail.test/messages/send", query: "uploadType=media", contentType: "message/rfc822",
		auth: "Bearer at-1", contentLength: msg.Size() + int64(len(bcc)), read: msg.Size() + int64(len(bcc))}
	if s != want {
		t.Errorf("request %+v,\nwant %+v", s, want)
	}
	if res.Reply != "250 2.0.0 Accepted by the Gmail API (id 18c0ffee)" {
		t.Errorf("reply %q", res.Reply)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("sending 16 MiB allocated %d bytes: the message was buffered", alloc)
	}
}
