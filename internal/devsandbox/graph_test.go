package devsandbox_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	graphMailbox = "sender@contoso.test"
	appID        = "graph-app"
	appSecret    = "graph-secret"
)

type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// graphErr decodes a Graph error body.
func (r apiResponse) graphErr(t *testing.T) (code, message string) {
	t.Helper()
	var e struct {
		Error struct {
			Code       string            `json:"code"`
			Message    string            `json:"message"`
			InnerError map[string]string `json:"innerError"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d: body is not a Graph error: %q", r.status, r.body)
	}
	if e.Error.InnerError["request-id"] == "" {
		t.Errorf("Graph error without innerError.request-id: %s", r.body)
	}
	return e.Error.Code, e.Error.Message
}

func sandboxClient(sb *devsandbox.Sandbox) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sb.CA.Pool}}}
}

func doRequest(t *testing.T, sb *devsandbox.Sandbox, method, url, token, contentType string, body []byte, extra ...string) apiResponse {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := sandboxClient(sb).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// tokenFor obtains an access token from the sandbox's token endpoint:
// app-only (client_credentials) when user is "", else by refresh token.
func tokenFor(t *testing.T, sb *devsandbox.Sandbox, user, scope string) string {
	t.Helper()
	sb.Tokens.AddClient(appID, appSecret)
	form := url.Values{"client_id": {appID}, "client_secret": {appSecret}, "scope": {scope}, "grant_type": {"client_credentials"}}
	if user != "" {
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", sb.Tokens.IssueRefreshToken(appID, user, scope))
	}
	resp, err := sandboxClient(sb).PostForm(sb.Tokens.URL, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token endpoint: status %d, %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

func sendMailURL(sb *devsandbox.Sandbox, mailbox string) string {
	return sb.Graph.URL + "/v1.0/users/" + mailbox + "/sendMail"
}

func b64(raw string) []byte { return []byte(base64.StdEncoding.EncodeToString([]byte(raw))) }

const plainMessage = "From: Sender <sender@contoso.test>\r\nTo: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"

// awaitCond polls cond until it holds or the test's deadline comes.
func awaitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := t.Context()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Second))
		defer cancel()
	}
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestGraphTokenChecks(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	valid := tokenFor(t, sb, "", devsandbox.GraphScope)
	googleScoped := tokenFor(t, sb, "", "https://mail.google.com/")
	graphNoMail := tokenFor(t, sb, "", "https://graph.microsoft.com/User.Read")
	otherUser := tokenFor(t, sb, "other@contoso.test", devsandbox.GraphMailSendScope)
	sb.Tokens.SetAccessTokenTTL(0)
	expired := tokenFor(t, sb, "", devsandbox.GraphScope)
	tests := []struct {
		name, token string
		status      int
		code, msg   string
	}{
		{"missing", "", 401, "InvalidAuthenticationToken", "Access token is empty."},
		{"unknown", "at-forged", 401, "InvalidAuthenticationToken", "Access token validation failure."},
		{"expired", expired, 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."},
		{"other audience", googleScoped, 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."},
		{"no Mail.Send", graphNoMail, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."},
		{"delegated for another mailbox", otherUser, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), tc.token, "text/plain", b64(plainMessage))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			code, msg := r.graphErr(t)
			if code != tc.code || msg != tc.msg {
				t.Errorf("error %s %q, want %s %q", code, msg, tc.code, tc.msg)
			}
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("401 without a Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := len(sb.Graph.Messages()); n != 0 {
		t.Errorf("%d messages sent with bad tokens", n)
	}
	// The valid app-only token is accepted for any mailbox.
	if r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), valid, "text/plain", b64(plainMessage)); r.status != http.StatusAccepted {
		t.Fatalf("valid token: status %d: %s", r.status, r.body)
	}
}

func TestGraphSendMailDerivesRecipientsAndStripsBcc(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, graphMailbox, devsandbox.GraphMailSendScope)
	// Bare LF line ends, a folded Bcc and a duplicate: Graph sends one copy
	// per distinct address and delivers no Bcc header.
	raw := "From: sender@contoso.test\nTo: A <a@example.com>, b@example.com\nCc: c@example.com, A@example.com\n" +
		"Bcc: hidden@example.com,\n secret@example.com\nSubject: derived\n\nhello\n"
	r := doRequest(t, sb, "POST", sendMailURL(sb, "Sender@Contoso.test"), token, "text/plain", b64(raw))
	if r.status != http.StatusAccepted || len(r.body) != 0 {
		t.Fatalf("status %d, body %q; want 202 without a body", r.status, r.body)
	}
	msgs := sb.Graph.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages recorded, want 1", len(msgs))
	}
	m := msgs[0]
	want := []string{"a@example.com", "b@example.com", "c@example.com", "hidden@example.com", "secret@example.com"}
	if diff := cmp.Diff(want, m.To); diff != "" {
		t.Errorf("recipients (-want +got):\n%s", diff)
	}
	if m.User != graphMailbox || m.From != graphMailbox || m.Subject != "derived" || m.Size != len(m.Data) {
		t.Errorf("recorded %+v", m)
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header.Get("Bcc") != "" || bytes.Contains(m.Data, []byte("secret@")) || bytes.Contains(m.Data, []byte("hidden@")) {
		t.Errorf("Bcc left in the delivered message:\n%s", m.Data)
	}
	if parsed.Header.Get("Message-Id") == "" || parsed.Header.Get("Cc") == "" {
		t.Errorf("delivered header lacks Message-ID or Cc:\n%s", m.Data)
	}
	if bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("bare LF in the recorded message")
	}
}

func TestGraphSendMailRejects(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	big := strings.Repeat("x", devsandbox.GraphMaxRequestBytes) // base64 makes it larger still
	tests := []struct {
		name, contentType string
		body              []byte
		status            int
		code              string
	}{
		{"over 4 MB", "text/plain", b64(plainMessage + big), 413, "RequestBodyTooLarge"},
		{"not base64", "text/plain", []byte("From: x\r\n\r\n!!!"), 400, "ErrorMimeContentInvalidBase64String"},
		{"JSON", "application/json", []byte(`{"message":{}}`), 415, "UnsupportedMediaType"},
		{"no recipients", "text/plain", b64("From: sender@contoso.test\r\nSubject: x\r\n\r\nbody\r\n"), 400, "ErrorInvalidRecipients"},
		{"From another mailbox", "text/plain", b64("From: boss@contoso.test\r\nTo: a@example.com\r\n\r\nbody\r\n"), 403, "ErrorSendAsDenied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, tc.contentType, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, tc.status, r.body)
			}
			if code, _ := r.graphErr(t); code != tc.code {
				t.Errorf("code %s, want %s", code, tc.code)
			}
		})
	}
	if n := len(sb.Graph.Messages()); n != 0 {
		t.Fatalf("%d messages recorded from rejected requests", n)
	}
	sb.Graph.GrantSendAs(graphMailbox, "boss@contoso.test")
	r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64("From: boss@contoso.test\r\nTo: a@example.com\r\n\r\nbody\r\n"))
	if r.status != http.StatusAccepted {
		t.Fatalf("send-as granted: status %d: %s", r.status, r.body)
	}
	if m := sb.Graph.Messages(); len(m) != 1 || m[0].From != "boss@contoso.test" || m[0].User != graphMailbox {
		t.Errorf("recorded %+v", m)
	}
}

func TestGraphDraftUploadSessionSend(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	users := sb.Graph.URL + "/v1.0/users/" + graphMailbox
	draftMIME := "From: sender@contoso.test\r\nTo: a@example.com\r\nBcc: b@example.com\r\nSubject: large\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attachment\r\n"
	r := doRequest(t, sb, "POST", users+"/messages", token, "text/plain", b64(draftMIME))
	if r.status != http.StatusCreated {
		t.Fatalf("create draft: %d %s", r.status, r.body)
	}
	var draft struct{ ID string }
	if err := json.Unmarshal(r.body, &draft); err != nil || draft.ID == "" {
		t.Fatalf("draft answer %s", r.body)
	}
	// 7 MB: too large for sendMail, uploaded in chunks of at most 4 MB.
	attachment := bytes.Repeat([]byte("0123456789abcdef"), 7<<16)
	tooSmall := doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/attachments/createUploadSession", token, "application/json",
		[]byte(`{"AttachmentItem":{"attachmentType":"file","name":"small.bin","size":1000}}`))
	if code, _ := tooSmall.graphErr(t); tooSmall.status != 400 || code != "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize" {
		t.Errorf("session for 1000 bytes: %d %s", tooSmall.status, code)
	}
	r = doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/attachments/createUploadSession", token, "application/json",
		fmt.Appendf(nil, `{"AttachmentItem":{"attachmentType":"file","name":"big.bin","size":%d,"contentType":"application/octet-stream"}}`, len(attachment)))
	if r.status != http.StatusCreated {
		t.Fatalf("createUploadSession: %d %s", r.status, r.body)
	}
	var session struct {
		UploadURL string   `json:"uploadUrl"`
		Next      []string `json:"nextExpectedRanges"`
	}
	if err := json.Unmarshal(r.body, &session); err != nil || session.UploadURL == "" || len(session.Next) != 1 {
		t.Fatalf("session answer %s", r.body)
	}
	put := func(start, end int, token string) apiResponse {
		return doRequest(t, sb, "PUT", session.UploadURL, token, "application/octet-stream", attachment[start:end+1],
			"Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(attachment)))
	}
	if r := put(0, 99, token); r.status != http.StatusUnauthorized {
		t.Errorf("PUT with an Authorization header: %d, want 401", r.status)
	}
	if r := put(0, 5<<20, ""); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("5 MB chunk: %d, want 413", r.status)
	}
	if r := put(100, 199, ""); r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("chunk out of order: %d, want 416", r.status)
	}
	const chunk = 3 << 20
	for start := 0; start < len(attachment); start += chunk {
		end := min(start+chunk, len(attachment)) - 1
		r := put(start, end, "")
		last := end == len(attachment)-1
		switch {
		case last && (r.status != http.StatusCreated || !strings.Contains(r.header.Get("Location"), "Attachments('")):
			t.Fatalf("last chunk: %d, Location %q", r.status, r.header.Get("Location"))
		case !last && (r.status != http.StatusOK || !bytes.Contains(r.body, fmt.Appendf(nil, `"nextExpectedRanges":["%d"]`, end+1))):
			t.Fatalf("chunk %d-%d: %d %s", start, end, r.status, r.body)
		}
	}
	if n := len(sb.Graph.Messages()); n != 0 {
		t.Fatalf("a draft was sent before send: %d", n)
	}
	r = doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/send", token, "", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	msgs := sb.Graph.Messages()
	if len(msgs) != 1 || sb.Graph.Drafts() != 0 {
		t.Fatalf("%d messages and %d drafts after send", len(msgs), sb.Graph.Drafts())
	}
	if diff := cmp.Diff([]string{"a@example.com", "b@example.com"}, msgs[0].To); diff != "" {
		t.Errorf("recipients (-want +got):\n%s", diff)
	}
	text, files := parts(t, msgs[0].Data)
	if text != "see attachment\r\n" || len(files) != 1 || !bytes.Equal(files["big.bin"], attachment) {
		t.Errorf("delivered text %q and %d attachments (big.bin equal: %v)", text, len(files), bytes.Equal(files["big.bin"], attachment))
	}
	if bytes.Contains(msgs[0].Data, []byte("b@example.com")) {
		t.Errorf("Bcc left in the delivered message")
	}
	if r := doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/send", token, "", nil); r.status != http.StatusNotFound {
		t.Errorf("sending a sent draft again: %d, want 404", r.status)
	}
}

// parts returns the text and the attachments of a multipart/mixed message.
func parts(t *testing.T, data []byte) (string, map[string][]byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	var text string
	files := map[string][]byte{}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return text, files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		if p.FileName() != "" {
			dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\r\n", ""))
			if err != nil {
				t.Fatal(err)
			}
			files[p.FileName()] = dec
			continue
		}
		text = string(b)
	}
}

func TestGraphSmallAttachmentIntoMultipartDraft(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	users := sb.Graph.URL + "/v1.0/users/" + graphMailbox
	draftMIME := "From: sender@contoso.test\r\nTo: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n"
	r := doRequest(t, sb, "POST", users+"/messages", token, "text/plain", b64(draftMIME))
	var draft struct{ ID string }
	if err := json.Unmarshal(r.body, &draft); err != nil || r.status != http.StatusCreated {
		t.Fatalf("create draft: %d %s", r.status, r.body)
	}
	r = doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/attachments", token, "application/json",
		[]byte(`{"@odata.type":"#microsoft.graph.fileAttachment","name":"a.txt","contentType":"text/plain","contentBytes":"`+base64.StdEncoding.EncodeToString([]byte("attached"))+`"}`))
	if r.status != http.StatusCreated {
		t.Fatalf("attach: %d %s", r.status, r.body)
	}
	if r := doRequest(t, sb, "POST", users+"/messages/"+draft.ID+"/send", token, "", nil); r.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	text, files := parts(t, sb.Graph.Messages()[0].Data)
	if text != "hi" || string(files["a.txt"]) != "attached" {
		t.Errorf("text %q, files %q", text, files)
	}
}

func TestGraphMailboxConcurrencyLimit(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	release := sb.Graph.HoldRequests()
	t.Cleanup(release)
	var wg sync.WaitGroup
	statuses := make([]int, devsandbox.GraphMaxConcurrentPerMailbox)
	for i := range statuses {
		wg.Go(func() {
			statuses[i] = doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage)).status
		})
	}
	awaitCond(t, "4 requests in flight", func() bool { return sb.Graph.InFlight(graphMailbox) == devsandbox.GraphMaxConcurrentPerMailbox })
	r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage))
	if code, _ := r.graphErr(t); r.status != http.StatusTooManyRequests || code != "ApplicationThrottled" || r.header.Get("Retry-After") != "1" {
		t.Errorf("5th concurrent request: %d %s, Retry-After %q", r.status, code, r.header.Get("Retry-After"))
	}
	release()
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusAccepted {
			t.Errorf("held request %d: status %d", i, s)
		}
	}
	if got := sb.Graph.PeakConcurrency(graphMailbox); got != devsandbox.GraphMaxConcurrentPerMailbox {
		t.Errorf("peak concurrency %d", got)
	}
	if n := len(sb.Graph.Messages()); n != devsandbox.GraphMaxConcurrentPerMailbox {
		t.Errorf("%d messages sent, want 4", n)
	}
}

func TestGraphScriptedErrors(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	tests := []struct {
		name       string
		err        devsandbox.GraphError
		status     int
		code       string
		retryAfter string
	}{
		{"send as denied", devsandbox.GraphSendAsDenied, 403, "ErrorSendAsDenied", ""},
		{"access denied", devsandbox.GraphAccessDenied, 403, "ErrorAccessDenied", ""},
		{"mailbox not enabled", devsandbox.GraphMailboxNotEnabled, 404, "MailboxNotEnabledForRESTAPI", ""},
		{"message size", devsandbox.GraphMessageSizeExceeded, 400, "ErrorMessageSizeExceeded", ""},
		{"throttled", devsandbox.GraphThrottled(7), 429, "ApplicationThrottled", "7"},
		{"unavailable", devsandbox.GraphUnavailable, 503, "ServiceUnavailable", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Graph.FailNext(graphMailbox, tc.err)
			r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage))
			code, msg := r.graphErr(t)
			if r.status != tc.status || code != tc.code || msg == "" || r.header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("got %d %s %q Retry-After %q", r.status, code, msg, r.header.Get("Retry-After"))
			}
			// The script is used up: the next request goes through.
			if r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage)); r.status != http.StatusAccepted {
				t.Errorf("after the scripted error: %d %s", r.status, r.body)
			}
		})
	}
	e := devsandbox.GraphMailboxNotEnabled
	sb.Graph.FailAlways(graphMailbox, &e)
	for range 2 {
		if r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage)); r.status != http.StatusNotFound {
			t.Errorf("FailAlways: %d", r.status)
		}
	}
	sb.Graph.FailAlways(graphMailbox, nil)
	if r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage)); r.status != http.StatusAccepted {
		t.Errorf("cleared: %d", r.status)
	}
	sb.Graph.SetMaxMessageSize(graphMailbox, 10)
	r := doRequest(t, sb, "POST", sendMailURL(sb, graphMailbox), token, "text/plain", b64(plainMessage))
	if code, _ := r.graphErr(t); code != "ErrorMessageSizeExceeded" {
		t.Errorf("over the mailbox's MaxSendSize: %d %s", r.status, code)
	}
}

// createDraft creates a draft from MIME and returns its id.
func createDraft(t *testing.T, sb *devsandbox.Sandbox, token, raw string) string {
	t.Helper()
	r := doRequest(t, sb, "POST", sb.Graph.URL+"/v1.0/users/"+graphMailbox+"/messages", token, "text/plain", b64(raw))
	var draft struct{ ID string }
	if err := json.Unmarshal(r.body, &draft); err != nil || r.status != http.StatusCreated || draft.ID == "" {
		t.Fatalf("create draft: %d %s", r.status, r.body)
	}
	return draft.ID
}

func TestGraphDeleteDraftEndsItsUploadSessions(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	users := sb.Graph.URL + "/v1.0/users/" + graphMailbox
	id := createDraft(t, sb, token, plainMessage)
	r := doRequest(t, sb, "POST", users+"/messages/"+id+"/attachments/createUploadSession", token, "application/json",
		fmt.Appendf(nil, `{"AttachmentItem":{"attachmentType":"file","name":"big.bin","size":%d}}`, devsandbox.GraphMinUploadSession))
	var session struct {
		UploadURL string `json:"uploadUrl"`
	}
	if err := json.Unmarshal(r.body, &session); err != nil || r.status != http.StatusCreated {
		t.Fatalf("createUploadSession for the 2 MiB minimum: %d %s", r.status, r.body)
	}
	if r := doRequest(t, sb, "DELETE", users+"/messages/"+id, token, "", nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if sb.Graph.Drafts() != 0 {
		t.Errorf("%d drafts after DELETE", sb.Graph.Drafts())
	}
	put := doRequest(t, sb, "PUT", session.UploadURL, "", "application/octet-stream", make([]byte, 100), "Content-Range", fmt.Sprintf("bytes 0-99/%d", devsandbox.GraphMinUploadSession))
	if put.status != http.StatusNotFound {
		t.Errorf("PUT to the deleted draft's session: %d", put.status)
	}
	for _, method := range []string{"DELETE", "POST"} {
		path := users + "/messages/" + id
		if method == "POST" {
			path += "/send"
		}
		if r := doRequest(t, sb, method, path, token, "", nil); r.status != http.StatusNotFound {
			t.Errorf("%s of the deleted draft: %d", method, r.status)
		}
	}
	if n := sb.Graph.Requests(graphMailbox, devsandbox.GraphOpDeleteDraft); n != 2 {
		t.Errorf("%d DELETE requests counted, want 2", n)
	}
}

func TestGraphFailNextAtScriptsOneOperation(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	token := tokenFor(t, sb, "", devsandbox.GraphScope)
	users := sb.Graph.URL + "/v1.0/users/" + graphMailbox
	sb.Graph.FailNextAt(graphMailbox, devsandbox.GraphOpAddAttachment, devsandbox.GraphPass, devsandbox.GraphThrottled(3), devsandbox.GraphDropConnection)
	id := createDraft(t, sb, token, plainMessage) // another operation: not scripted
	attach := func() (*http.Response, error) {
		req, _ := http.NewRequest("POST", users+"/messages/"+id+"/attachments", strings.NewReader(
			`{"@odata.type":"#microsoft.graph.fileAttachment","name":"a.txt","contentType":"text/plain; charset=iso-8859-1","contentBytes":"`+
				base64.StdEncoding.EncodeToString([]byte("caf\xe9"))+`"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		return sandboxClient(sb).Do(req)
	}
	statuses := []int{}
	for range 3 {
		resp, err := attach()
		if err != nil {
			statuses = append(statuses, 0) // the dropped connection
			continue
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if diff := cmp.Diff([]int{http.StatusCreated, http.StatusTooManyRequests, 0}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if r := doRequest(t, sb, "POST", users+"/messages/"+id+"/send", token, "", nil); r.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	// The text file keeps its charset beside the name Exchange adds.
	data := sb.Graph.Messages()[0].Data
	if !bytes.Contains(data, []byte(`Content-Type: text/plain; charset=iso-8859-1; name=a.txt`)) {
		t.Errorf("attachment's Content-Type lost its charset:\n%s", data)
	}
}
