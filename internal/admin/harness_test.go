package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// The tokens of the tests: long random-looking strings, as the README
// asks of real ones. Neither may appear in any log line or answer.
const (
	readToken  = "rd-5c1e9a7f3b2d4e6a8c0f1b3d5e7a9c2e4f6a8b0d"
	adminToken = "ad-8b1d3f5a7c9e0b2d4f6a8c1e3b5d7f9a0c2e4b6d"
	wrongToken = "wr-0000aaaa1111bbbb2222cccc3333dddd4444eeee"
)

// harness is the console over a fake runtime, served on 127.0.0.1.
type harness struct {
	t     *testing.T
	b     *fakeBackend
	clock *testutil.Clock
	logs  *testutil.LogBuffer
	srv   *httptest.Server
	s     *Server

	mu      sync.Mutex
	tokens  Tokens
	tokErr  error
	secrets []string // every token ever configured or tried
	answers []string // every answer's headers and body
}

type harnessOptions struct {
	subjects, noStore bool
	tls               bool     // serve over HTTPS (a test certificate the harness's clients trust)
	hosts             []string // Options.Hosts
	searchTimeout     time.Duration
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	clock := testutil.NewClock(time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC))
	h := &harness{t: t, clock: clock, logs: &testutil.LogBuffer{}, b: newFixture(clock.Now(), o.subjects),
		tokens: Tokens{Read: readToken, Admin: adminToken}, secrets: []string{readToken, adminToken, wrongToken}}
	if o.noStore {
		h.b.st = nil
		h.b.info.Store = ""
	}
	h.s = New(h.b, Options{Tokens: h.currentTokens, Log: h.logs.Logger(t), Now: clock.Now,
		Hosts: func() []string { return o.hosts }, SearchTimeout: o.searchTimeout})
	h.srv = httptest.NewUnstartedServer(h.s.Handler())
	if o.tls {
		h.srv.StartTLS()
	} else {
		h.srv.Start()
	}
	t.Cleanup(func() {
		h.srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		testutil.AssertNoSecrets(t, "console logs", h.logs.String(), h.secrets)
		testutil.AssertNoSecrets(t, "console answers", strings.Join(h.answers, "\n"), h.secrets)
	})
	return h
}

func (h *harness) currentTokens() (Tokens, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tokens, h.tokErr
}

// setTokens configures new tokens (a rotation in Vault, say).
func (h *harness) setTokens(toks Tokens) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokens = toks
	h.secrets = append(h.secrets, toks.Read, toks.Admin)
}

func (h *harness) setTokenError(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokErr = err
}

// request sends one request with client (nil: no cookies, redirects
// not followed) and returns the answer and its body.
func (h *harness) request(client *http.Client, req *http.Request) (*http.Response, string) {
	h.t.Helper()
	if client == nil {
		client = h.noRedirects()
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	h.record(resp, string(body))
	return resp, string(body)
}

// record keeps an answer's headers and body for the check that no
// secret is in any.
func (h *harness) record(resp *http.Response, body string) {
	var headers strings.Builder
	_ = resp.Header.Write(&headers)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answers = append(h.answers, headers.String(), body)
}

// noRedirects is a client of the harness's server (trusting its test
// certificate over TLS) without cookies that does not follow redirects.
func (h *harness) noRedirects() *http.Client {
	return &http.Client{Transport: h.srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (h *harness) newRequest(method, path string, body io.Reader) *http.Request {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	return req
}

// api calls the API with a bearer token ("" for none) and decodes the
// JSON answer.
func (h *harness) api(method, path, token string) (*http.Response, map[string]any) {
	h.t.Helper()
	req := h.newRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, body := h.request(nil, req)
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		h.t.Fatalf("%s %s: %d, not JSON: %v\n%s", method, path, resp.StatusCode, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		h.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp, v
}

// browser is a cookie-keeping client that does not follow redirects, of
// the console at base.
type browser struct {
	h      *harness
	client *http.Client
	base   string
}

func (h *harness) browser() *browser {
	h.t.Helper()
	return h.browserAt(h.srv.URL, h.srv.Client().Transport)
}

// browserAt is a browser of the console at base, reached through
// transport.
func (h *harness) browserAt(base string, transport http.RoundTripper) *browser {
	h.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	client := &http.Client{Jar: jar, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{h: h, client: client, base: base}
}

func (b *browser) newRequest(method, path string, body io.Reader) *http.Request {
	b.h.t.Helper()
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.h.t.Fatal(err)
	}
	return req
}

// withSession adds the browser's cookies to req by hand, for a request
// sent otherwise than through its client (a cookie jar looks its
// cookies up by the Host, which some tests change).
func (b *browser) withSession(req *http.Request) *http.Request {
	b.h.t.Helper()
	for _, c := range b.client.Jar.Cookies(req.URL) {
		req.AddCookie(c)
	}
	return req
}

func (b *browser) get(path string) (*http.Response, string) {
	b.h.t.Helper()
	return b.h.request(b.client, b.newRequest(http.MethodGet, path, nil))
}

// formRequest is a form post as a browser sends it from the console's
// own page (Origin: null under Referrer-Policy: no-referrer), plus extra
// headers.
func (b *browser) formRequest(path string, form url.Values, headers ...string) *http.Request {
	b.h.t.Helper()
	req := b.newRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "null")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

func (b *browser) post(path string, form url.Values, headers ...string) (*http.Response, string) {
	b.h.t.Helper()
	return b.h.request(b.client, b.formRequest(path, form, headers...))
}

// login signs the browser in with token and fails the test otherwise.
func (b *browser) login(token string) {
	b.h.t.Helper()
	resp, body := b.post("/login", url.Values{"token": {token}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		b.h.t.Fatalf("login: %d %s\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's CSRF token from a page's forms.
func (b *browser) csrf() string {
	b.h.t.Helper()
	_, body := b.get("/system")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		b.h.t.Fatalf("no CSRF field on the page:\n%s", body)
	}
	return m[1]
}

// auditLines are the audit logger's lines so far.
func (h *harness) auditLines() []string {
	var out []string
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, "test.audit:") {
			out = append(out, l)
		}
	}
	return out
}

// wantAudit fails unless some audit line holds every part.
func (h *harness) wantAudit(parts ...string) {
	h.t.Helper()
	for _, l := range h.auditLines() {
		if containsAll(l, parts...) {
			return
		}
	}
	h.t.Errorf("no audit line with %q in:\n%s", parts, strings.Join(h.auditLines(), "\n"))
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
