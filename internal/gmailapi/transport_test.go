package gmailapi_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/gmailapi"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

const (
	mailbox      = "sender@gmail.test"
	clientID     = "gmail-app"
	clientSecret = "gmail-secret"
)

// fixture is a sandbox and a Gmail API transport for mailbox, with
// delegated tokens (a refresh token of the mailbox) from the sandbox's
// token endpoint.
type fixture struct {
	sb  *devsandbox.Sandbox
	src *oauth.Source
	tr  *gmailapi.Transport
	log *testutil.LogBuffer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient(clientID, clientSecret)
	rt := sb.Tokens.IssueRefreshToken(clientID, mailbox, devsandbox.GmailScope)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sb.CA.Pool}}}
	t.Cleanup(client.CloseIdleConnections)
	src := oauth.NewSource(oauth.Settings{
		Name: mailbox, Flow: config.FlowRefreshToken, TokenURL: sb.Tokens.URL, ClientID: clientID,
		ClientSecret: func() (string, error) { return clientSecret, nil },
		RefreshToken: func() (string, error) { return rt, nil },
		Scopes:       []string{devsandbox.GmailScope},
		HTTPClient:   oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: sb.CA.Pool}),
	})
	log := &testutil.LogBuffer{}
	return &fixture{sb: sb, src: src, log: log,
		tr: &gmailapi.Transport{Mailbox: httpsend.Mailbox{Account: mailbox, BaseURL: sb.Gmail.URL, Tokens: src, HTTP: client, Log: log.Logger(t)}}}
}

type message string

func (m message) Reader() (io.Reader, error) { return strings.NewReader(string(m)), nil }
func (m message) Size() int64                { return int64(len(m)) }

// deliver runs one delivery through tr.
func deliver(t testing.TB, tr transport.Transport, mail transport.MailOptions, rcpts []string, msg transport.Message) (transport.Result, error) {
	t.Helper()
	ctx := context.Background()
	d, err := tr.Begin(ctx, transport.Envelope{ID: "m1", Account: mailbox, From: mailbox, Mail: mail})
	if err != nil {
		return transport.Result{}, err
	}
	for _, r := range rcpts {
		if err := d.AddRcpt(ctx, r, transport.RcptOptions{}); err != nil {
			d.Abort()
			return transport.Result{}, err
		}
	}
	return d.Body(ctx, msg)
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// body has what a relay must pass on unchanged: 8-bit text, a dot line,
// trailing white space, no final line end.
const body = "Grüße\r\n.\r\n..leading dots \r\nFrom the start\r\n\r\nend"

// simple is a message to a@example.com.
var simple = message(crlf("From: sender@gmail.test\nTo: a@example.com\nMessage-ID: <s@x>\nSubject: s\n\n") + body)

func TestEnvelopeFidelity(t *testing.T) {
	tests := []struct {
		name     string
		header   string
		rcpts    []string
		wantTo   []string // what the sandbox delivered to
		wantHead string   // the header the recipients get
	}{
		{
			name:     "To and Cc are the envelope: byte for byte",
			header:   crlf("From: sender@gmail.test\nTo: A <a@example.com>,\n\tb@example.com\nCc: c@example.com\nMessage-ID: <1@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "b@example.com", "c@example.com"},
			wantTo:   []string{"a@example.com", "b@example.com", "c@example.com"},
			wantHead: crlf("From: sender@gmail.test\nTo: A <a@example.com>,\n\tb@example.com\nCc: c@example.com\nMessage-ID: <1@x>\nSubject: s\n\n"),
		},
		{
			name:     "blind recipient: a copy without Bcc; the client's Bcc list gets none",
			header:   crlf("From: sender@gmail.test\nTo: a@example.com\nBcc: hidden@example.com, other@example.com\nMessage-ID: <2@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "hidden@example.com", "blind@example.com"},
			wantTo:   []string{"a@example.com", "blind@example.com", "hidden@example.com"},
			wantHead: crlf("From: sender@gmail.test\nTo: a@example.com\nMessage-ID: <2@x>\nSubject: s\n\n"),
		},
		{
			name:     "Bcc split: the header names others, only the blind copy goes out",
			header:   crlf("From: sender@gmail.test\nTo: a@example.com\nCc: c@example.com\nMessage-ID: <3@x>\nSubject: s\n\n"),
			rcpts:    []string{"blind@example.com"},
			wantTo:   []string{"blind@example.com"},
			wantHead: crlf("From: sender@gmail.test\nMessage-ID: <3@x>\nSubject: s\n\n"),
		},
		{
			name:     "partial retry: To keeps the envelope's recipients only",
			header:   crlf("From: sender@gmail.test\nTo: a@example.com, B <b@example.com>\nCc: c@example.com\nMessage-ID: <4@x>\nSubject: s\n\n"),
			rcpts:    []string{"b@example.com"},
			wantTo:   []string{"b@example.com"},
			wantHead: crlf("From: sender@gmail.test\nTo: \"B\" <b@example.com>\nMessage-ID: <4@x>\nSubject: s\n\n"),
		},
		{
			name:     "an address named twice in the envelope and in To gets one copy",
			header:   crlf("From: sender@gmail.test\nTo: a@example.com, A@Example.com\nMessage-ID: <5@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "A@EXAMPLE.COM"},
			wantTo:   []string{"a@example.com"},
			wantHead: crlf("From: sender@gmail.test\nTo: a@example.com, A@Example.com\nMessage-ID: <5@x>\nSubject: s\n\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			res, err := deliver(t, f.tr, transport.MailOptions{}, tt.rcpts, message(tt.header+body))
			if err != nil {
				t.Fatal(err)
			}
			msgs := f.sb.Gmail.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages sent, want 1", len(msgs))
			}
			got := msgs[0]
			if res.Reply != "250 2.0.0 Accepted by the Gmail API (id "+got.ID+")" || res.DSN || res.Queued || res.Failed != nil {
				t.Errorf("result %+v, want the Gmail message id %s", res, got.ID)
			}
			to := make([]string, len(got.To))
			for i, a := range got.To {
				to[i] = strings.ToLower(a)
			}
			slices.Sort(to)
			if diff := cmp.Diff(tt.wantTo, to); diff != "" {
				t.Errorf("recipients (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantHead+body, string(got.Data)); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSizeLimit: 35 MB pass, a byte more is refused by the relay without
// contacting Gmail, at MAIL when declared, at DATA otherwise.
func TestSizeLimit(t *testing.T) {
	header := crlf("From: sender@gmail.test\nTo: a@example.com\nMessage-ID: <big@x>\nSubject: s\n\n")
	sized := func(n int) message { return message(header + strings.Repeat("x", n-len(header))) }
	tests := []struct {
		name     string
		declared int64
		msg      message
		rcpts    []string
		atBegin  bool
		wantSent bool
	}{
		{name: "exactly 35 MB", declared: gmailapi.MaxMessageBytes, msg: sized(gmailapi.MaxMessageBytes), rcpts: []string{"a@example.com"}, wantSent: true},
		{name: "one byte over", msg: sized(gmailapi.MaxMessageBytes + 1), rcpts: []string{"a@example.com"}},
		{name: "the added Bcc field tips it over", msg: sized(gmailapi.MaxMessageBytes), rcpts: []string{"a@example.com", "blind@example.com"}},
		{name: "declared one byte over", declared: gmailapi.MaxMessageBytes + 1, msg: sized(100), rcpts: []string{"a@example.com"}, atBegin: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			d, err := f.tr.Begin(ctx, transport.Envelope{ID: "big", Account: mailbox, From: mailbox, Mail: transport.MailOptions{Size: tt.declared}})
			if err == nil {
				for _, r := range tt.rcpts {
					if err := d.AddRcpt(ctx, r, transport.RcptOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				_, err = d.Body(ctx, tt.msg)
			} else if !tt.atBegin {
				t.Fatalf("Begin: %v", err)
			}
			if tt.wantSent {
				if err != nil {
					t.Fatal(err)
				}
				if msgs := f.sb.Gmail.Messages(); len(msgs) != 1 || len(msgs[0].Data) != gmailapi.MaxMessageBytes {
					t.Fatalf("sandbox received %d messages", len(msgs))
				}
				return
			}
			te := transport.As(err)
			if te.Kind != transport.KindLocal || te.Reply.Code != 552 || te.Reply.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
				t.Fatalf("error %v (%s), want a local 552 5.3.4", err, transport.ReplyText(te.Reply))
			}
			if n := f.sb.Gmail.PeakConcurrency(mailbox); n != 0 {
				t.Errorf("the Gmail API was contacted (%d requests)", n)
			}
		})
	}
}

func TestGmailErrors(t *testing.T) {
	sendingLimitUntil := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Millisecond)
	withRetryAfter := func(e devsandbox.GmailError, s int) devsandbox.GmailError { e.RetryAfter = s; return e }
	tests := []struct {
		name    string
		script  func(g *devsandbox.GmailAPIServer)
		account string // the transport's account; mailbox by default
		to      string // the To field; the recipient by default
		extra   string // more header lines
		code    int
		ec      smtp.EnhancedCode
		kind    transport.Kind
		retryIn time.Duration // RetryAt this long after the request (±the request's time)
		retryAt time.Time     // or RetryAt exactly
		pacific bool          // or RetryAt at the next midnight Pacific Time
		advice  string        // in the log
	}{
		{name: "insufficient permissions", script: failNext(devsandbox.GmailInsufficientPermissions),
			code: 550, ec: smtp.EnhancedCode{5, 7, 1}, kind: transport.KindAuth, advice: "https://mail.google.com/"},
		{name: "domain policy", script: failNext(devsandbox.GmailDomainPolicy),
			code: 550, ec: smtp.EnhancedCode{5, 7, 1}, kind: transport.KindAuth, advice: "API controls"},
		{name: "a token of another user", account: "boss@gmail.test",
			code: 550, ec: smtp.EnhancedCode{5, 7, 1}, kind: transport.KindAuth, advice: "impersonating"},
		{name: "invalid To header", script: failNext(devsandbox.GmailInvalidToHeader),
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindProvider},
		{name: "mail service not enabled", script: failNext(devsandbox.GmailMailServiceNotEnabled),
			code: 550, ec: smtp.EnhancedCode{5, 3, 5}, kind: transport.KindProvider, advice: "Gmail on"},
		{name: "rate limit with Retry-After", script: failNext(withRetryAfter(devsandbox.GmailRateLimitExceeded, 7)),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 7 * time.Second},
		{name: "user rate limit without Retry-After", script: failNext(devsandbox.GmailUserRateLimitExceeded),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 30 * time.Second},
		{name: "too many concurrent requests", script: failNext(devsandbox.GmailTooManyConcurrent),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 30 * time.Second},
		{name: "sending limit: Google's time to retry", script: failNext(devsandbox.GmailSendingLimitExceeded(sendingLimitUntil)),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryAt: sendingLimitUntil, advice: "daily_message_limit"},
		{name: "project's daily limit: midnight Pacific Time", script: failNext(devsandbox.GmailDailyLimitExceeded),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, pacific: true},
		{name: "backend error", script: failNext(devsandbox.GmailBackendError),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 30 * time.Second},
		{name: "backend error with Retry-After", script: failNext(withRetryAfter(devsandbox.GmailBackendError, 120)),
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 2 * time.Minute},
		{name: "upload too large", script: failNext(devsandbox.GmailError{Status: http.StatusRequestEntityTooLarge, Reason: "uploadTooLarge", Message: "too large"}),
			code: 552, ec: smtp.EnhancedCode{5, 3, 4}, kind: transport.KindProvider},
		{name: "gateway timeout: may have been sent", script: failNext(devsandbox.GmailError{Status: http.StatusGatewayTimeout, Reason: "backendError", Message: "timeout"}),
			code: 451, ec: smtp.EnhancedCode{4, 4, 2}, kind: transport.KindAmbiguous},
		{name: "unparsable To is refused by the relay", to: "a@example.com, <broken",
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindLocal},
		{name: "header over 64 KiB is refused by the relay", extra: "X-Long: " + strings.Repeat("x", 70<<10) + "\r\n",
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindLocal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.script != nil {
				tt.script(f.sb.Gmail)
			}
			if tt.account != "" {
				f.tr.Account = tt.account
			}
			to := "a@example.com"
			if tt.to != "" {
				to = tt.to
			}
			before := time.Now()
			_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"},
				message(crlf("From: "+mailbox+"\nTo: "+to+"\nSubject: s\n")+tt.extra+"\r\n"+body))
			after := time.Now()
			te := transport.As(err)
			if err == nil || te.Reply.Code != tt.code || te.Reply.EnhancedCode != tt.ec || te.Kind != tt.kind {
				t.Fatalf("error %v: reply %q kind %d; want %d %v kind %d", err, transport.ReplyText(te.Reply), te.Kind, tt.code, tt.ec, tt.kind)
			}
			switch {
			case tt.retryIn > 0 && (te.RetryAt.Before(before.Add(tt.retryIn)) || te.RetryAt.After(after.Add(tt.retryIn))):
				t.Errorf("RetryAt %v, want %v after the request", te.RetryAt, tt.retryIn)
			case !tt.retryAt.IsZero() && !te.RetryAt.Equal(tt.retryAt):
				t.Errorf("RetryAt %v, want %v", te.RetryAt, tt.retryAt)
			case tt.pacific && !te.RetryAt.Equal(nextPacificMidnight(before)) && !te.RetryAt.Equal(nextPacificMidnight(after)):
				t.Errorf("RetryAt %v, want the next midnight Pacific Time, %v", te.RetryAt, nextPacificMidnight(after))
			}
			if !strings.Contains(f.log.String(), tt.advice) {
				t.Errorf("log lacks advice %q:\n%s", tt.advice, f.log.String())
			}
			if n := len(f.sb.Gmail.Messages()); n != 0 {
				t.Errorf("%d messages sent", n)
			}
		})
	}
}

func failNext(e devsandbox.GmailError) func(*devsandbox.GmailAPIServer) {
	return func(g *devsandbox.GmailAPIServer) { g.FailNext(mailbox, e) }
}

// nextPacificMidnight is the end of Google's day after now.
func nextPacificMidnight(now time.Time) time.Time {
	loc, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		loc = time.FixedZone("PST", -8*60*60)
	}
	y, m, d := now.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

func TestRevokedTokenIsRefreshedOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	f.sb.Tokens.RevokeAccessTokens() // the cached token is now refused
	before := len(f.sb.Tokens.IssuedAccessTokens())
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com", "blind@example.com"}, simple); err != nil {
		t.Fatal(err)
	}
	if got := len(f.sb.Tokens.IssuedAccessTokens()) - before; got != 1 {
		t.Errorf("%d tokens issued after the 401, want 1", got)
	}
	msgs := f.sb.Gmail.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages sent, want 1", len(msgs))
	}
	// The second request read the message again, whole and fitted.
	if diff := cmp.Diff(string(simple), string(msgs[0].Data)); diff != "" || len(msgs[0].To) != 2 {
		t.Errorf("to %v, message (-want +got):\n%s", msgs[0].To, diff)
	}
}

// refusedTokens hands out one token that the Gmail API refuses.
type refusedTokens struct {
	mu                    sync.Mutex
	tokens, invalidations int
}

func (c *refusedTokens) Token(context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens++
	return "at-refused", nil
}

func (c *refusedTokens) Invalidate(string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidations++
}

func TestRefusedTokenFailsAfterOneRefresh(t *testing.T) {
	f := newFixture(t)
	tokens := &refusedTokens{}
	f.tr.Tokens = tokens
	_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, simple)
	te := transport.As(err)
	if te.Kind != transport.KindAuth || te.Reply.Code != 454 {
		t.Fatalf("error %v (%s), want KindAuth 454", err, transport.ReplyText(te.Reply))
	}
	// Begin, then one token per request.
	if tokens.invalidations != 1 || tokens.tokens != 3 {
		t.Errorf("%d invalidations and %d token calls, want 1 and 3", tokens.invalidations, tokens.tokens)
	}
	testutil.AssertNoSecrets(t, "log", f.log.String(), []string{"at-refused"})
}

// TestDSNParameters: RET and ENVID are dropped, NOTIFY is honoured only
// when it asks for failure notices alone, unless the caller sends its
// own notices.
func TestDSNParameters(t *testing.T) {
	tests := []struct {
		name   string
		notify []string
		own    bool
		ok     bool
	}{
		{"absent", nil, false, true},
		{"failure", []string{"FAILURE"}, false, true},
		{"failure and delay", []string{"FAILURE", "DELAY"}, false, true},
		{"never", []string{"NEVER"}, false, false},
		{"success", []string{"SUCCESS", "FAILURE"}, false, false},
		{"success with a queue", []string{"SUCCESS"}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			d, err := f.tr.Begin(ctx, transport.Envelope{ID: "m", Account: mailbox, From: "bounces@example.com",
				Mail: transport.MailOptions{OwnNotices: tt.own, Return: "HDRS", EnvelopeID: "env-1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Abort()
			err = d.AddRcpt(ctx, "a@example.com", transport.RcptOptions{Notify: tt.notify, ORcpt: "rfc822;a@example.com"})
			if tt.ok != (err == nil) {
				t.Fatalf("AddRcpt: %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if te := transport.As(err); te.Kind != transport.KindLocal || te.Reply.Code != 555 {
					t.Errorf("refusal %s kind %d, want a local 555", transport.ReplyText(te.Reply), te.Kind)
				}
				return
			}
			res, err := d.Body(ctx, simple)
			if err != nil || res.DSN {
				t.Fatalf("Body: %v, DSN %v: want sent without DSN", err, res.DSN)
			}
		})
	}
}

// TestAtMostTwoSendsPerMailbox: the cap holds across Transports of one
// mailbox (as after a reload); other mailboxes are not held up.
func TestAtMostTwoSendsPerMailbox(t *testing.T) {
	f := newFixture(t)
	f.sb.Gmail.SetMaxConcurrent(2) // one more would be answered 429
	release := f.sb.Gmail.HoldRequests()
	t.Cleanup(release)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			tr := f.tr
			if i%2 == 1 {
				other := *f.tr
				tr = &other
			}
			_, errs[i] = deliverQuietly(tr, simple)
		})
	}
	awaitCondition(t, func() bool { return f.sb.Gmail.InFlight(mailbox) == 2 })
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	if got := len(f.sb.Gmail.Messages()); got != n {
		t.Errorf("%d messages sent, want %d", got, n)
	}
	if peak := f.sb.Gmail.PeakConcurrency(mailbox); peak != 2 {
		t.Errorf("peak concurrency %d, want 2", peak)
	}
}

// deliverQuietly is deliver for goroutines other than the test's.
func deliverQuietly(tr transport.Transport, msg transport.Message) (transport.Result, error) {
	ctx := context.Background()
	d, err := tr.Begin(ctx, transport.Envelope{ID: "m", Account: mailbox, From: mailbox})
	if err != nil {
		return transport.Result{}, err
	}
	if err := d.AddRcpt(ctx, "a@example.com", transport.RcptOptions{}); err != nil {
		d.Abort()
		return transport.Result{}, err
	}
	return d.Body(ctx, msg)
}

func awaitCondition(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNetworkFailures classifies requests that got no answer.
func TestNetworkFailures(t *testing.T) {
	f := newFixture(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	big := message(crlf("From: sender@gmail.test\nTo: a@example.com\nSubject: s\n\n") + strings.Repeat("0123456789abcdef\r\n", (16<<20)/18))
	tests := []struct {
		name, url string
		msg       message
		kind      transport.Kind
	}{
		{"connection refused", closedURL, simple, transport.KindConnect},
		{"closed while the message was uploaded", rawServer(t, false), big, transport.KindLost},
		{"closed after the whole upload", rawServer(t, true), simple, transport.KindAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := *f.tr
			tr.BaseURL, tr.HTTP = tt.url, &http.Client{}
			tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour})
			_, err := deliver(t, &tr, transport.MailOptions{}, []string{"a@example.com"}, tt.msg)
			te := transport.As(err)
			if te.Kind != tt.kind || !te.Temporary() {
				t.Fatalf("error %v: kind %d (%s), want kind %d, temporary", err, te.Kind, transport.ReplyText(te.Reply), tt.kind)
			}
			if tr.Circuit.State() != limits.StateOpen {
				t.Errorf("the account's circuit is %s after a network failure", tr.Circuit.State())
			}
		})
	}
}

// rawServer reads an HTTP request's header, and its body too when
// wholeBody, then closes the connection without answering.
func rawServer(t *testing.T, wholeBody bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil && wholeBody {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// brokenMessage fails after its header: the relay's storage failed.
type brokenMessage struct {
	message
	short bool // ends early instead of failing
}

func (m brokenMessage) Reader() (io.Reader, error) {
	head := strings.NewReader(string(m.message[:len(m.message)/2]))
	if m.short {
		return head, nil
	}
	return io.MultiReader(head, errReader{}), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("spool: authentication failed") }

// TestUnreadableMessage: a message the relay cannot read is its own
// failure, not a lost connection, and counts for no circuit.
func TestUnreadableMessage(t *testing.T) {
	long := message(crlf("From: sender@gmail.test\nTo: a@example.com\nSubject: s\n\n") + strings.Repeat("x", 1<<20))
	for _, short := range []bool{false, true} {
		f := newFixture(t)
		f.tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour})
		_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, brokenMessage{message: long, short: short})
		te := transport.As(err)
		if te.Kind != transport.KindLocal || te.Reply.Code != 451 || !te.Temporary() {
			t.Errorf("short=%v: error %v (%s kind %d), want a local 451", short, err, transport.ReplyText(te.Reply), te.Kind)
		}
		if f.tr.Circuit.State() != limits.StateClosed || len(f.sb.Gmail.Messages()) != 0 {
			t.Errorf("short=%v: circuit %s, %d messages sent", short, f.tr.Circuit.State(), len(f.sb.Gmail.Messages()))
		}
	}
}

// TestCircuitCountsGmailFailuresOnly: the relay's own refusals and
// Gmail's verdicts on one message leave the account's circuit closed;
// throttling opens it, and then Gmail is not contacted.
func TestCircuitCountsGmailFailuresOnly(t *testing.T) {
	tests := []struct {
		name     string
		script   func(g *devsandbox.GmailAPIServer)
		msg      message
		wantOpen bool
	}{
		{name: "unparsable To", msg: message(crlf("To: <broken\nSubject: s\n\n") + body)},
		{name: "invalid To header", script: failNext(devsandbox.GmailInvalidToHeader), msg: simple},
		{name: "throttled", script: failNext(devsandbox.GmailUserRateLimitExceeded), msg: simple, wantOpen: true},
		{name: "insufficient permissions", script: failNext(devsandbox.GmailInsufficientPermissions), msg: simple, wantOpen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour})
			if tt.script != nil {
				tt.script(f.sb.Gmail)
			}
			if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, tt.msg); err == nil {
				t.Fatal("delivery succeeded")
			}
			if open := f.tr.Circuit.State() == limits.StateOpen; open != tt.wantOpen {
				t.Fatalf("circuit %s, want open=%v", f.tr.Circuit.State(), tt.wantOpen)
			}
			if !tt.wantOpen {
				return
			}
			sent := f.sb.Gmail.PeakConcurrency(mailbox)
			_, err := f.tr.Begin(context.Background(), transport.Envelope{ID: "m2", Account: mailbox, From: mailbox})
			te := transport.As(err)
			if te.Kind != transport.KindCircuit || te.Limit != "account" || te.Reply.Code != 451 || te.RetryAt.IsZero() {
				t.Errorf("Begin with the circuit open: %v (%s, kind %d, limit %q)", err, transport.ReplyText(te.Reply), te.Kind, te.Limit)
			}
			if f.sb.Gmail.PeakConcurrency(mailbox) != sent {
				t.Error("the Gmail API was contacted with the circuit open")
			}
		})
	}
}

// TestReservationKeptOnlyWhenSent: a failed send or a dry run gives the
// daily quota back; a sent message keeps it.
func TestReservationKeptOnlyWhenSent(t *testing.T) {
	f := newFixture(t)
	f.tr.Limits = limits.NewAccountLimits(0, 0, 1, 0, 0)
	f.sb.Gmail.FailNext(mailbox, devsandbox.GmailBackendError)
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, simple); err == nil {
		t.Fatal("the scripted 503 did not fail the delivery")
	}
	ctx := context.Background()
	d, err := f.tr.Begin(ctx, transport.Envelope{ID: "dry", Account: mailbox, From: mailbox})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, simple); err != nil {
		t.Fatalf("after a failed send and a dry run: %v", err)
	}
	_, err = deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, simple)
	if te := transport.As(err); te.Kind != transport.KindLimit || te.Reply.Code != 451 {
		t.Fatalf("over the daily quota: %v (%s)", err, transport.ReplyText(te.Reply))
	}
	if n := len(f.sb.Gmail.Messages()); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}
}

func TestRecipientChecks(t *testing.T) {
	f := newFixture(t)
	f.tr.Limits = limits.NewAccountLimits(0, 0, 0, 0, 2)
	ctx := context.Background()
	d, err := f.tr.Begin(ctx, transport.Envelope{ID: "r", Account: mailbox, From: mailbox})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Abort()
	tests := []struct {
		rcpt string
		code int // 0: accepted
	}{
		{"a@example.com", 0},
		{"A@EXAMPLE.COM", 0}, // the same address: no second share
		{"b@example.com", 0},
		{"c@example.com", 452},
		{"not an address", 501},
	}
	for _, tt := range tests {
		err := d.AddRcpt(ctx, tt.rcpt, transport.RcptOptions{})
		if code := transport.As(err).Reply; (err == nil) != (tt.code == 0) || err != nil && code.Code != tt.code {
			t.Errorf("AddRcpt(%q): %v, want %d", tt.rcpt, err, tt.code)
		}
	}
	empty, err := f.tr.Begin(ctx, transport.Envelope{ID: "none", Account: mailbox, From: mailbox})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.Body(ctx, simple); transport.As(err).Reply.Code != 503 {
		t.Errorf("Body without recipients: %v", err)
	}
}
