package graph_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

const (
	kB = 1000
	mB = 1000 * kB
)

// largeHeader is the header section of the large test messages: one To,
// one Cc, and (in the envelope) a blind recipient.
const largeHeader = "From: sender@contoso.test\r\nTo: A <a@example.com>\r\nCc: c@example.com\r\nSubject: large\r\nMessage-ID: <large@x>\r\nMIME-Version: 1.0\r\n"

var largeRcpts = []string{"a@example.com", "c@example.com", "blind@example.com"}

func TestLargeMessages(t *testing.T) {
	pdf := randomBytes(4_500_000, 1)
	small1, small2 := randomBytes(1_500_000, 2), randomBytes(1_400_000, 3)
	big := randomBytes(3_500_000, 4)
	tiny := randomBytes(200*kB, 5)
	photo, icon := randomBytes(3_200_000, 6), randomBytes(2_500_000, 7)
	csv := []byte(strings.Repeat("Grüße;\"a=b\";12345678901234567890;trailing space \r\n", 70_000)) // ~3.6 MB of text
	sendMailSized := randomBytes(2_220_000, 8)                                                      // a 2.9 MiB message
	tests := []struct {
		name      string
		body      string
		files     []wantFile
		texts     []string
		sessions  int // upload sessions
		posts     int // attachments POSTed whole
		viaDraft  bool
		wantRange bool
	}{
		{
			name: "2.9 MiB goes out with sendMail",
			body: multipartOf("mixed", "b1", textPart("plain", "see attached"),
				filePart{contentType: "application/octet-stream", disposition: `attachment; filename="data.bin"`, data: sendMailSized}.String()),
			files: []wantFile{{name: "data.bin", mediaType: "application/octet-stream", data: sendMailSized}},
			texts: []string{"text/plain: see attached"},
		},
		{
			name: "one 4.5 MB attachment (6.1 MB message): upload session",
			body: multipartOf("mixed", "b1", textPart("plain", "the report"),
				filePart{contentType: "application/pdf", disposition: `attachment; filename="report.pdf"`, data: pdf}.String()),
			files:    []wantFile{{name: "report.pdf", mediaType: "application/pdf", data: pdf}},
			texts:    []string{"text/plain: the report"},
			sessions: 1, viaDraft: true,
		},
		{
			name: "small and large attachments, RFC 2231 and RFC 2047 names",
			body: multipartOf("mixed", "b1", textPart("plain", "four files"),
				filePart{contentType: "application/octet-stream", disposition: `attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe%201.bin`, data: small1}.String(),
				filePart{contentType: "application/zip", disposition: `attachment; filename="=?UTF-8?B?w6l0w6kuemlw?="`, data: big}.String(),
				filePart{contentType: "application/octet-stream", disposition: `attachment; filename="two.bin"`, data: small2}.String(),
				filePart{contentType: "image/png; name=\"tiny.png\"", data: tiny}.String()),
			files: []wantFile{
				{name: "Grüße 1.bin", mediaType: "application/octet-stream", data: small1},
				{name: "été.zip", mediaType: "application/zip", data: big},
				{name: "two.bin", mediaType: "application/octet-stream", data: small2},
				{name: "tiny.png", mediaType: "image/png", data: tiny},
			},
			texts: []string{"text/plain: four files"},
			// two.bin and tiny.png stay in the draft: it fits without them.
			sessions: 1, posts: 1, viaDraft: true,
		},
		{
			name: "inline images with Content-ID in multipart/related",
			body: multipartOf("related", "rel",
				textPart("html", `<p><img src="cid:photo@x"><img src="cid:icon@x"></p>`),
				filePart{contentType: "image/jpeg", disposition: `inline; filename="photo.jpg"`, contentID: "photo@x", data: photo}.String(),
				filePart{contentType: "image/png", contentID: "icon@x", data: icon}.String()),
			files: []wantFile{
				{name: "photo.jpg", mediaType: "image/jpeg", contentID: "photo@x", inline: true, data: photo},
				{name: "part3.png", mediaType: "image/png", contentID: "icon@x", inline: true, data: icon},
			},
			texts:    []string{`text/html: <p><img src="cid:photo@x"><img src="cid:icon@x"></p>`},
			sessions: 1, posts: 1, viaDraft: true,
		},
		{
			name: "multipart/alternative inside multipart/mixed, quoted-printable attachment",
			body: multipartOf("mixed", "outer",
				multipartOf("alternative", "alt", textPart("plain", "plain text"), textPart("html", "<b>html</b>")),
				filePart{contentType: "text/csv; charset=utf-8", disposition: `attachment; filename="table.csv"`, data: csv, qp: true}.String()),
			files:    []wantFile{{name: "table.csv", mediaType: "text/csv", data: csv}},
			texts:    []string{"text/plain: plain text", "text/html: <b>html</b>"},
			sessions: 1, viaDraft: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			g := f.sb.Graph
			res, err := deliver(t, f.tr, transport.MailOptions{}, largeRcpts, largeHeader+tt.body)
			if err != nil {
				t.Fatalf("%v (%s)", err, transport.ReplyText(transport.As(err).Reply))
			}
			if !strings.HasPrefix(res.Reply, "250 2.0.0 ") {
				t.Errorf("reply %q", res.Reply)
			}
			msgs := g.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages sent, want 1", len(msgs))
			}
			to := slices.Clone(msgs[0].To)
			slices.Sort(to)
			if diff := cmp.Diff([]string{"a@example.com", "blind@example.com", "c@example.com"}, to); diff != "" {
				t.Errorf("recipients (-want +got):\n%s", diff)
			}
			if strings.Contains(string(msgs[0].Data[:min(len(msgs[0].Data), 4096)]), "blind@") {
				t.Error("the blind recipient is visible in the delivered header")
			}
			leaves := deliveredLeaves(t, msgs[0].Data)
			checkFiles(t, leaves, tt.files)
			if diff := cmp.Diff(tt.texts, texts(leaves)); diff != "" {
				t.Errorf("body texts (-want +got):\n%s", diff)
			}
			checkRequests(t, g, tt.viaDraft, tt.sessions, tt.posts)
			checkRanges(t, g.UploadRanges())
		})
	}
}

// checkRequests checks which Graph operations the delivery used.
func checkRequests(t *testing.T, g *devsandbox.GraphServer, viaDraft bool, sessions, posts int) {
	t.Helper()
	want := map[devsandbox.GraphOp]int{devsandbox.GraphOpSendMail: 1}
	if viaDraft {
		want = map[devsandbox.GraphOp]int{devsandbox.GraphOpCreateDraft: 1, devsandbox.GraphOpSendDraft: 1,
			devsandbox.GraphOpCreateUploadSession: sessions, devsandbox.GraphOpAddAttachment: posts}
	}
	for _, op := range []devsandbox.GraphOp{devsandbox.GraphOpSendMail, devsandbox.GraphOpCreateDraft, devsandbox.GraphOpSendDraft,
		devsandbox.GraphOpCreateUploadSession, devsandbox.GraphOpAddAttachment, devsandbox.GraphOpDeleteDraft} {
		if got := g.Requests(mailbox, op); got != want[op] {
			t.Errorf("%d %s requests, want %d", got, op, want[op])
		}
	}
	if n := g.Drafts(); n != 0 {
		t.Errorf("%d drafts left in the mailbox", n)
	}
}

// checkRanges checks the upload PUTs: every chunk but each session's last
// is a multiple of 320 KiB, none over 4 MB.
func checkRanges(t *testing.T, ranges []string) {
	t.Helper()
	for _, r := range ranges {
		var start, end, total int
		if _, err := fmt.Sscanf(r, "bytes %d-%d/%d", &start, &end, &total); err != nil {
			t.Fatalf("range %q: %v", r, err)
		}
		n := end - start + 1
		if n > 4*mB || (end+1 != total && n%(320<<10) != 0) {
			t.Errorf("chunk %q: %d bytes", r, n)
		}
	}
}

func TestLargeMessageRefusals(t *testing.T) {
	tests := []struct {
		name   string
		size   int64 // declared at MAIL
		msg    transport.Message
		code   int
		ec     smtp.EnhancedCode
		reason string
	}{
		{name: "3.5 MB of text, no attachment",
			msg:  message(largeHeader + textPart("plain", strings.Repeat("0123456789abcdef\r\n", 3_500_000/18))),
			code: 552, ec: smtp.EnhancedCode{5, 3, 4}, reason: "without its attachments is"},
		{name: "text over 3 MiB beside an attachment",
			msg: message(largeHeader + multipartOf("mixed", "b", textPart("plain", strings.Repeat("x", 3_300_000)),
				filePart{contentType: "application/pdf", disposition: "attachment", data: randomBytes(1000, 9)}.String())),
			code: 552, ec: smtp.EnhancedCode{5, 3, 4}, reason: "without its attachments is"},
		{name: "declared SIZE over 150 MiB", size: 151 << 20, code: 552, ec: smtp.EnhancedCode{5, 3, 4}, reason: "sends messages of up to"},
		{name: "message over 150 MiB", msg: oversized(151 << 20), code: 552, ec: smtp.EnhancedCode{5, 3, 4}, reason: "sends messages of up to"},
		{name: "multipart without its closing delimiter",
			msg: message(largeHeader + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf\r\n" +
				"Content-Transfer-Encoding: base64\r\n\r\n" + base64Lines(randomBytes(3_500_000, 10))),
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, reason: "MIME structure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			d, err := f.tr.Begin(ctx, transport.Envelope{ID: "m", Account: mailbox, From: mailbox, Mail: transport.MailOptions{Size: tt.size}})
			if err == nil {
				if err = d.AddRcpt(ctx, "a@example.com", transport.RcptOptions{}); err != nil {
					t.Fatal(err)
				}
				_, err = d.Body(ctx, tt.msg)
			}
			te := transport.As(err)
			if err == nil || te.Kind != transport.KindLocal || te.Reply.Code != tt.code || te.Reply.EnhancedCode != tt.ec || !strings.Contains(te.Reply.Message, tt.reason) {
				t.Fatalf("error %v (%s), want a local %d %v saying %q", err, transport.ReplyText(te.Reply), tt.code, tt.ec, tt.reason)
			}
			if n := f.sb.Graph.PeakConcurrency(mailbox); n != 0 {
				t.Errorf("Graph was contacted (%d requests)", n)
			}
		})
	}
}

// oversized is a message of n bytes that must not be read.
type oversized int64

func (o oversized) Reader() (io.Reader, error) { panic("an oversized message was read") }
func (o oversized) Size() int64                { return int64(o) }

// largeFailureMessage has one attachment uploaded in two chunks and one
// POSTed (neither fits in the draft beside the other): a request fails
// part way through.
var largeFailureMessage = sync.OnceValue(func() string {
	return largeHeader + multipartOf("mixed", "b", textPart("plain", "hi"),
		filePart{contentType: "application/pdf", disposition: `attachment; filename="a.pdf"`, data: randomBytes(4_000_000, 11)}.String(),
		filePart{contentType: "application/pdf", disposition: `attachment; filename="b.pdf"`, data: randomBytes(2_500_000, 12)}.String())
})

func TestLargeMessageFailures(t *testing.T) {
	unauthorized := devsandbox.GraphError{Status: 401, Code: "InvalidAuthenticationToken", Message: "Access token has expired or is not yet valid."}
	gateway := devsandbox.GraphError{Status: 504, Code: "GatewayTimeout", Message: "timeout"}
	tests := []struct {
		name    string
		op      devsandbox.GraphOp
		script  []devsandbox.GraphError
		ok      bool
		code    int
		ec      smtp.EnhancedCode
		kind    transport.Kind
		retryIn time.Duration
		deleted bool // the draft was deleted
		drafts  int  // drafts left
	}{
		{name: "401 at createUploadSession: refreshed once", op: devsandbox.GraphOpCreateUploadSession, script: []devsandbox.GraphError{unauthorized}, ok: true},
		{name: "401 at the attachment POST: refreshed once", op: devsandbox.GraphOpAddAttachment, script: []devsandbox.GraphError{unauthorized}, ok: true},
		{name: "401 at send: refreshed once", op: devsandbox.GraphOpSendDraft, script: []devsandbox.GraphError{unauthorized}, ok: true},
		{name: "Graph unavailable at the second chunk", op: devsandbox.GraphOpUploadChunk, script: []devsandbox.GraphError{devsandbox.GraphPass, devsandbox.GraphUnavailable},
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, deleted: true},
		{name: "connection lost at the second chunk", op: devsandbox.GraphOpUploadChunk, script: []devsandbox.GraphError{devsandbox.GraphPass, devsandbox.GraphDropConnection},
			code: 451, ec: smtp.EnhancedCode{4, 4, 2}, kind: transport.KindLost, deleted: true},
		{name: "throttled during the upload", op: devsandbox.GraphOpUploadChunk, script: []devsandbox.GraphError{devsandbox.GraphThrottled(9)},
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 9 * time.Second, deleted: true},
		{name: "throttled at the attachment POST", op: devsandbox.GraphOpAddAttachment, script: []devsandbox.GraphError{devsandbox.GraphThrottled(5)},
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 5 * time.Second, deleted: true},
		{name: "upload session gone", op: devsandbox.GraphOpUploadChunk, script: []devsandbox.GraphError{{Status: 404, Code: "ErrorItemNotFound", Message: "gone"}},
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, deleted: true},
		{name: "gateway timeout creating the draft: nothing sent", op: devsandbox.GraphOpCreateDraft, script: []devsandbox.GraphError{gateway},
			code: 451, ec: smtp.EnhancedCode{4, 4, 2}, kind: transport.KindLost},
		{name: "message size exceeded at send", op: devsandbox.GraphOpSendDraft, script: []devsandbox.GraphError{devsandbox.GraphMessageSizeExceeded},
			code: 552, ec: smtp.EnhancedCode{5, 3, 4}, kind: transport.KindProvider, deleted: true},
		{name: "connection lost at send: possibly sent, draft kept", op: devsandbox.GraphOpSendDraft, script: []devsandbox.GraphError{devsandbox.GraphDropConnection},
			code: 451, ec: smtp.EnhancedCode{4, 4, 2}, kind: transport.KindAmbiguous, drafts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each has its own sandbox; the mailbox's slots are shared
			f := newFixture(t)
			g := f.sb.Graph
			g.FailNextAt(mailbox, tt.op, tt.script...)
			issued := len(f.sb.Tokens.IssuedAccessTokens())
			before := time.Now()
			_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, largeFailureMessage())
			after := time.Now()
			if tt.ok {
				if err != nil {
					t.Fatalf("%v (%s)", err, transport.ReplyText(transport.As(err).Reply))
				}
				if n := len(g.Messages()); n != 1 {
					t.Errorf("%d messages sent, want 1", n)
				}
				if n := len(f.sb.Tokens.IssuedAccessTokens()) - issued; n != 2 {
					t.Errorf("%d tokens issued, want 2 (one, then one after the 401)", n)
				}
				checkFiles(t, deliveredLeaves(t, g.Messages()[0].Data), []wantFile{
					{name: "a.pdf", mediaType: "application/pdf", data: randomBytes(4_000_000, 11)},
					{name: "b.pdf", mediaType: "application/pdf", data: randomBytes(2_500_000, 12)}})
				return
			}
			te := transport.As(err)
			if err == nil || te.Reply.Code != tt.code || te.Reply.EnhancedCode != tt.ec || te.Kind != tt.kind {
				t.Fatalf("error %v: %s kind %d; want %d %v kind %d", err, transport.ReplyText(te.Reply), te.Kind, tt.code, tt.ec, tt.kind)
			}
			if tt.retryIn > 0 && (te.RetryAt.Before(before.Add(tt.retryIn)) || te.RetryAt.After(after.Add(tt.retryIn))) {
				t.Errorf("RetryAt %v, want %v after the request", te.RetryAt, tt.retryIn)
			}
			if n := len(g.Messages()); n != 0 {
				t.Errorf("%d messages sent", n)
			}
			if del := g.Requests(mailbox, devsandbox.GraphOpDeleteDraft) == 1; del != tt.deleted {
				t.Errorf("draft deleted: %v, want %v", del, tt.deleted)
			}
			if n := g.Drafts(); n != tt.drafts {
				t.Errorf("%d drafts left, want %d", n, tt.drafts)
			}
		})
	}
}

// TestLargeSendsTakeAtMostHalfTheSlots: each large message's sequence
// holds one request slot, and at most two run per mailbox, so that small
// messages keep two slots.
func TestLargeSendsTakeAtMostHalfTheSlots(t *testing.T) {
	f := newFixture(t)
	g := f.sb.Graph
	release := g.HoldRequests()
	t.Cleanup(release)
	const large, small = 3, 2
	var wg sync.WaitGroup
	errs := make([]error, large+small)
	for i := range large {
		wg.Go(func() {
			_, errs[i] = deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, largeFailureMessage())
		})
	}
	awaitCondition(t, func() bool { return g.InFlight(mailbox) == 2 })
	for i := range small {
		wg.Go(func() {
			_, errs[large+i] = deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: s\n\n")+body)
		})
	}
	// The small messages get the two slots the large ones leave.
	awaitCondition(t, func() bool { return g.InFlight(mailbox) == 4 })
	if n := g.Requests(mailbox, devsandbox.GraphOpCreateDraft); n != 2 {
		t.Errorf("%d drafts being created, want 2", n)
	}
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	if n := len(g.Messages()); n != large+small {
		t.Errorf("%d messages sent, want %d", n, large+small)
	}
	if n := g.PeakConcurrency(mailbox); n != 4 {
		t.Errorf("peak concurrency %d, want 4", n)
	}
}
