package devsandbox_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	webClientID = "web-test"
	webUser     = "inbox@oauthrelay.test"
)

// xoauth2 is the client side of SASL XOAUTH2, enough to submit to the sandbox.
type xoauth2 struct{ user, token string }

func (x xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}
func (x xoauth2) Next([]byte) ([]byte, error) { return nil, nil }

// accessToken obtains an access token for webUser from the sandbox's token
// endpoint, over HTTPS verified against the sandbox CA.
func accessToken(t *testing.T, sb *devsandbox.Sandbox) string {
	t.Helper()
	sb.Tokens.AddClient(webClientID, "web-secret")
	rt := sb.Tokens.IssueRefreshToken(webClientID, webUser, "https://mail.google.com/")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sb.CA.Pool}}}
	resp, err := client.PostForm(sb.Tokens.URL, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {webClientID}, "client_secret": {"web-secret"},
	})
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

// deliver submits data to the sandbox SMTP server as a provider client
// would (STARTTLS, XOAUTH2) and returns the ID the sandbox gave it.
func deliver(t *testing.T, sb *devsandbox.Sandbox, token string, data []byte) string {
	t.Helper()
	c, err := smtp.DialStartTLS(sb.SMTP.Addr, &tls.Config{RootCAs: sb.CA.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(xoauth2{webUser, token}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(webUser, []string{"you@example.com"}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	msgs := sb.SMTP.Messages()
	return msgs[len(msgs)-1].ID
}

type webResponse struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, base, path string) webResponse {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return webResponse{resp.StatusCode, resp.Header, body}
}

// startInbox runs the sandbox and serves its inbox over real HTTP on
// 127.0.0.1, mounted the way `oauthrelay dev` mounts it.
func startInbox(t *testing.T) (*devsandbox.Sandbox, string) {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	mux := http.NewServeMux()
	mux.Handle("GET /dev/", sb.SMTP.WebHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return sb, srv.URL
}

// message has bytes that a careless copy would change: trailing spaces, a
// line that starts with a dot (dot-stuffed on the wire), 8-bit text.
var message = []byte("From: inbox@oauthrelay.test\r\nTo: you@example.com\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\n" +
	"body line  \r\n.dotted line\r\n8-bit caf\xc3\xa9\r\n")

func TestInboxServesMessages(t *testing.T) {
	sb, base := startInbox(t)
	token := accessToken(t, sb)
	id := deliver(t, sb, token, message)
	stored, ok := sb.SMTP.Message(id)
	if !ok || !bytes.Equal(stored.Data, message) {
		t.Fatalf("Message(%q) = %q, %v; want what was sent", id, stored.Data, ok)
	}

	t.Run("JSON list keeps its fields", func(t *testing.T) {
		r := get(t, base, "/dev/messages")
		var list []map[string]any
		if err := json.Unmarshal(r.body, &list); err != nil || r.status != 200 {
			t.Fatalf("status %d, %v: %s", r.status, err, r.body)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		want := map[string]any{"id": id, "authenticated_as": webUser, "from": webUser, "subject": "=?UTF-8?Q?caf=C3=A9?=", "size": float64(len(message))}
		if len(list) != 1 {
			t.Fatalf("list = %v", list)
		}
		for k, v := range want {
			if list[0][k] != v {
				t.Errorf("%s = %v, want %v", k, list[0][k], v)
			}
		}
		if _, ok := list[0]["received"]; !ok {
			t.Error("no received field")
		}
	})

	t.Run("HTML inbox links the raw view and the .eml", func(t *testing.T) {
		r := get(t, base, "/dev/")
		page := string(r.body)
		for _, want := range []string{`href="/dev/messages/` + id + `"`, `href="/dev/messages/` + id + `.eml"`, "café", "you@example.com"} {
			if !strings.Contains(page, want) {
				t.Errorf("inbox lacks %q:\n%s", want, page)
			}
		}
		if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		if strings.Contains(page, "<script") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
			t.Errorf("inbox has a script or an external resource:\n%s", page)
		}
	})

	tests := []struct {
		name, path, contentType, disposition string
	}{
		{"raw view", "/dev/messages/" + id, "text/plain; charset=utf-8", ""},
		{".eml download", "/dev/messages/" + id + ".eml", "message/rfc822", "attachment; filename=" + id + ".eml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, base, tt.path)
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			if !bytes.Equal(r.body, stored.Data) {
				t.Errorf("body differs from what the sandbox received:\n got %q\nwant %q", r.body, stored.Data)
			}
			if got := r.header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if got := r.header.Get("Content-Disposition"); got != tt.disposition {
				t.Errorf("Content-Disposition %q, want %q", got, tt.disposition)
			}
			if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
		})
	}
}

func TestInboxUnknownMessageIs404(t *testing.T) {
	sb, base := startInbox(t)
	deliver(t, sb, accessToken(t, sb), message)
	for _, path := range []string{"/dev/messages/000000000000", "/dev/messages/000000000000.eml", "/dev/messages/.eml", "/dev/nothing"} {
		if r := get(t, base, path); r.status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, r.status)
		}
	}
}

func TestInboxEscapesHostileHeaders(t *testing.T) {
	sb, base := startInbox(t)
	const hostile = `<script>alert("x")</script><img src=http://evil.test/a>`
	deliver(t, sb, accessToken(t, sb), []byte("Subject: "+hostile+"\r\n\r\nhi\r\n"))
	page := string(get(t, base, "/dev/").body)
	if strings.Contains(page, "<script") || strings.Contains(page, "<img") {
		t.Errorf("hostile subject rendered as markup:\n%s", page)
	}
	if !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=http://evil.test/a&gt;") {
		t.Errorf("escaped subject not shown:\n%s", page)
	}
}

func TestInboxEmpty(t *testing.T) {
	_, base := startInbox(t)
	if r := get(t, base, "/dev/"); r.status != 200 || !strings.Contains(string(r.body), "No messages yet") {
		t.Errorf("empty inbox: %d %s", r.status, r.body)
	}
	if r := get(t, base, "/dev/messages"); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("empty list: %d %s", r.status, r.body)
	}
}
