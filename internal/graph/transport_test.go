package graph_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/graph"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

const (
	mailbox   = "sender@contoso.test"
	appID     = "graph-app"
	appSecret = "graph-secret"
)

// fixture is a sandbox and a Graph transport for mailbox, with app-only
// client-credentials tokens from the sandbox's token endpoint.
type fixture struct {
	sb  *devsandbox.Sandbox
	src *oauth.Source
	tr  *graph.Transport
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient(appID, appSecret)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sb.CA.Pool}}}
	t.Cleanup(client.CloseIdleConnections)
	src := oauth.NewSource(oauth.Settings{
		Name: mailbox, Flow: config.FlowClientCredentials, TokenURL: sb.Tokens.URL,
		ClientID: appID, ClientSecret: func() (string, error) { return appSecret, nil },
		Scopes:     []string{devsandbox.GraphScope},
		HTTPClient: oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: sb.CA.Pool}),
	})
	return &fixture{sb: sb, src: src, tr: &graph.Transport{Mailbox: httpsend.Mailbox{Account: mailbox, BaseURL: sb.Graph.URL, Tokens: src, HTTP: client}}}
}

type message string

func (m message) Reader() (io.Reader, error) { return strings.NewReader(string(m)), nil }
func (m message) Size() int64                { return int64(len(m)) }

// deliver runs one delivery through tr.
func deliver(t *testing.T, tr transport.Transport, mail transport.MailOptions, rcpts []string, msg string) (transport.Result, error) {
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
	return d.Body(ctx, message(msg))
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// body has what a relay must pass on unchanged: 8-bit text, a dot line,
// trailing white space, no final line end.
const body = "Grüße\r\n.\r\n..leading dots \r\nFrom the start\r\n\r\nend"

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
			header:   crlf("From: sender@contoso.test\nTo: A <a@example.com>,\n\tb@example.com\nCc: c@example.com\nMessage-ID: <1@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "b@example.com", "c@example.com"},
			wantTo:   []string{"a@example.com", "b@example.com", "c@example.com"},
			wantHead: crlf("From: sender@contoso.test\nTo: A <a@example.com>,\n\tb@example.com\nCc: c@example.com\nMessage-ID: <1@x>\nSubject: s\n\n"),
		},
		{
			name:     "blind envelope recipients get a copy, the client's Bcc list does not",
			header:   crlf("From: sender@contoso.test\nTo: a@example.com\nBcc: hidden@example.com, other@example.com\nMessage-ID: <2@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "hidden@example.com", "blind@example.com"},
			wantTo:   []string{"a@example.com", "blind@example.com", "hidden@example.com"},
			wantHead: crlf("From: sender@contoso.test\nTo: a@example.com\nMessage-ID: <2@x>\nSubject: s\n\n"),
		},
		{
			name:     "header recipients outside the envelope get no copy",
			header:   crlf("From: sender@contoso.test\nTo: a@example.com, B <b@example.com>\nCc: c@example.com\nMessage-ID: <3@x>\nSubject: s\n\n"),
			rcpts:    []string{"b@example.com", "hidden@example.com"},
			wantTo:   []string{"b@example.com", "hidden@example.com"},
			wantHead: crlf("From: sender@contoso.test\nTo: \"B\" <b@example.com>\nMessage-ID: <3@x>\nSubject: s\n\n"),
		},
		{
			name:     "an address named twice in the envelope and in To gets one copy",
			header:   crlf("From: sender@contoso.test\nTo: a@example.com, A@Example.com\nMessage-ID: <4@x>\nSubject: s\n\n"),
			rcpts:    []string{"a@example.com", "A@EXAMPLE.COM"},
			wantTo:   []string{"a@example.com"},
			wantHead: crlf("From: sender@contoso.test\nTo: a@example.com, A@Example.com\nMessage-ID: <4@x>\nSubject: s\n\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			res, err := deliver(t, f.tr, transport.MailOptions{}, tt.rcpts, tt.header+body)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(res.Reply, "250 2.0.0 ") || res.DSN || res.Queued {
				t.Errorf("result %+v", res)
			}
			msgs := f.sb.Graph.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages sent, want 1", len(msgs))
			}
			got := msgs[0]
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

func TestGraphErrors(t *testing.T) {
	tests := []struct {
		name    string
		script  func(g *devsandbox.GraphServer)
		from    string
		to      string // the To field; the recipient by default
		extra   string // more header lines
		code    int
		ec      smtp.EnhancedCode
		kind    transport.Kind
		retryIn time.Duration // Retry-After the sandbox sends
	}{
		{name: "send as denied", from: "boss@contoso.test", code: 550, ec: smtp.EnhancedCode{5, 7, 1}, kind: transport.KindProvider},
		{name: "access denied", script: func(g *devsandbox.GraphServer) { g.FailNext(mailbox, devsandbox.GraphAccessDenied) },
			code: 550, ec: smtp.EnhancedCode{5, 7, 1}, kind: transport.KindAuth},
		{name: "mailbox not enabled", script: func(g *devsandbox.GraphServer) { g.FailAlways(mailbox, &devsandbox.GraphMailboxNotEnabled) },
			code: 550, ec: smtp.EnhancedCode{5, 3, 5}, kind: transport.KindProvider},
		{name: "message size exceeded", script: func(g *devsandbox.GraphServer) { g.SetMaxMessageSize(mailbox, 100) },
			code: 552, ec: smtp.EnhancedCode{5, 3, 4}, kind: transport.KindProvider},
		{name: "throttled", script: func(g *devsandbox.GraphServer) { g.FailNext(mailbox, devsandbox.GraphThrottled(7)) },
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider, retryIn: 7 * time.Second},
		{name: "unavailable", script: func(g *devsandbox.GraphServer) { g.FailNext(mailbox, devsandbox.GraphUnavailable) },
			code: 451, ec: smtp.EnhancedCode{4, 4, 5}, kind: transport.KindProvider},
		{name: "request body too large", script: func(g *devsandbox.GraphServer) {
			g.FailNext(mailbox, devsandbox.GraphError{Status: http.StatusRequestEntityTooLarge, Code: "RequestBodyTooLarge", Message: "too large"})
		}, code: 552, ec: smtp.EnhancedCode{5, 3, 4}, kind: transport.KindProvider},
		{name: "gateway timeout: may have been sent", script: func(g *devsandbox.GraphServer) {
			g.FailNext(mailbox, devsandbox.GraphError{Status: http.StatusGatewayTimeout, Code: "GatewayTimeout", Message: "timeout"})
		}, code: 451, ec: smtp.EnhancedCode{4, 4, 2}, kind: transport.KindAmbiguous},
		{name: "invalid content", script: func(g *devsandbox.GraphServer) {
			g.FailNext(mailbox, devsandbox.GraphError{Status: http.StatusBadRequest, Code: "ErrorMimeContentInvalid", Message: "bad"})
		}, code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindProvider},
		{name: "unparsable To is refused by the relay", to: "a@example.com, <broken",
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindLocal},
		{name: "header over 64 KiB is refused by the relay", extra: "X-Long: " + strings.Repeat("x", 70<<10) + "\r\n",
			code: 554, ec: smtp.EnhancedCode{5, 6, 0}, kind: transport.KindLocal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.script != nil {
				tt.script(f.sb.Graph)
			}
			from := mailbox
			if tt.from != "" {
				from = tt.from
			}
			to := "a@example.com"
			if tt.to != "" {
				to = tt.to
			}
			before := time.Now()
			_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"},
				crlf("From: "+from+"\nTo: "+to+"\nSubject: s\n")+tt.extra+"\r\n"+body)
			after := time.Now()
			te := transport.As(err)
			if err == nil || te.Reply.Code != tt.code || te.Reply.EnhancedCode != tt.ec || te.Kind != tt.kind {
				t.Fatalf("error %v: reply %q kind %d; want %d %v kind %d", err, transport.ReplyText(te.Reply), te.Kind, tt.code, tt.ec, tt.kind)
			}
			if tt.retryIn > 0 && (te.RetryAt.Before(before.Add(tt.retryIn)) || te.RetryAt.After(after.Add(tt.retryIn))) {
				t.Errorf("RetryAt %v, want %v after the request", te.RetryAt, tt.retryIn)
			}
			if n := len(f.sb.Graph.Messages()); n != 0 {
				t.Errorf("%d messages sent", n)
			}
		})
	}
}

func TestRevokedTokenIsRefreshedOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	f.sb.Tokens.RevokeAccessTokens() // the cached token is now refused
	before := len(f.sb.Tokens.IssuedAccessTokens())
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: s\n\n")+body); err != nil {
		t.Fatal(err)
	}
	if got := len(f.sb.Tokens.IssuedAccessTokens()) - before; got != 1 {
		t.Errorf("%d tokens issued after the 401, want 1", got)
	}
	if n := len(f.sb.Graph.Messages()); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}
}

// countingTokens hands out one token that Graph refuses.
type countingTokens struct{ tokens, invalidations atomic.Int32 }

func (c *countingTokens) Token(context.Context) (string, error) {
	c.tokens.Add(1)
	return "at-refused", nil
}
func (c *countingTokens) Invalidate(string) { c.invalidations.Add(1) }

func TestRefusedTokenFailsAfterOneRefresh(t *testing.T) {
	f := newFixture(t)
	tokens := &countingTokens{}
	f.tr.Tokens = tokens
	_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: s\n\n")+body)
	te := transport.As(err)
	if te.Kind != transport.KindAuth || te.Reply.Code != 454 {
		t.Fatalf("error %v (%s), want KindAuth 454", err, transport.ReplyText(te.Reply))
	}
	if n := tokens.invalidations.Load(); n != 1 {
		t.Errorf("%d invalidations, want 1", n)
	}
	// Begin, then one token per request.
	if n := tokens.tokens.Load(); n != 3 {
		t.Errorf("%d token calls, want 3", n)
	}
}

func TestNotifyPolicy(t *testing.T) {
	tests := []struct {
		name   string
		notify []string
		own    bool
		ok     bool
	}{
		{"absent", nil, false, true},
		{"failure", []string{"FAILURE"}, false, true},
		{"never", []string{"NEVER"}, false, false},
		{"success", []string{"SUCCESS", "FAILURE"}, false, false},
		{"success with a queue", []string{"SUCCESS"}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			d, err := f.tr.Begin(ctx, transport.Envelope{ID: "m", Account: mailbox, From: mailbox, Mail: transport.MailOptions{OwnNotices: tt.own}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Abort()
			err = d.AddRcpt(ctx, "a@example.com", transport.RcptOptions{Notify: tt.notify})
			if tt.ok != (err == nil) {
				t.Fatalf("AddRcpt: %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if te := transport.As(err); te.Kind != transport.KindLocal || te.Reply.Code != 555 {
					t.Errorf("refusal %s kind %d, want a local 555", transport.ReplyText(te.Reply), te.Kind)
				}
			}
		})
	}
}

func TestAtMostFourRequestsPerMailbox(t *testing.T) {
	f := newFixture(t)
	release := f.sb.Graph.HoldRequests()
	t.Cleanup(release)
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			// Half go through another Transport of the same mailbox, as
			// after a reload: the slots are the process's.
			tr := f.tr
			if i%2 == 1 {
				other := *f.tr
				tr = &other
			}
			_, errs[i] = deliver(t, tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: s\n\n")+body)
		})
	}
	awaitCondition(t, func() bool { return f.sb.Graph.InFlight(mailbox) == 4 })
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	if got := len(f.sb.Graph.Messages()); got != n {
		t.Errorf("%d messages sent, want %d", got, n)
	}
	if peak := f.sb.Graph.PeakConcurrency(mailbox); peak != 4 {
		t.Errorf("peak concurrency %d, want 4", peak)
	}
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

// TestNetworkFailures classifies requests that got no answer: refused
// connections (Graph saw nothing) and connections closed after the whole
// request was written (Graph may have sent it).
func TestNetworkFailures(t *testing.T) {
	f := newFixture(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	silent := silentServer(t)
	tests := []struct {
		name, url string
		kind      transport.Kind
	}{
		{"connection refused", closedURL, transport.KindConnect},
		{"closed after the request", silent, transport.KindAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := *f.tr
			tr.BaseURL, tr.HTTP = tt.url, &http.Client{}
			_, err := deliver(t, &tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: s\n\n")+body)
			te := transport.As(err)
			if te.Kind != tt.kind || !te.Temporary() {
				t.Fatalf("error %v: kind %d (%s), want kind %d, temporary", err, te.Kind, transport.ReplyText(te.Reply), tt.kind)
			}
		})
	}
}

// silentServer reads whole HTTP requests and closes the connection
// without answering.
func silentServer(t *testing.T) string {
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
			if err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestCircuitCountsGraphFailuresOnly: the relay's own refusals and
// Graph's verdicts on one message leave the account's circuit closed;
// throttling opens it, and then Graph is not contacted.
func TestCircuitCountsGraphFailuresOnly(t *testing.T) {
	tests := []struct {
		name     string
		script   func(g *devsandbox.GraphServer)
		msg      string
		wantOpen bool
	}{
		{name: "unparsable To", msg: crlf("To: <broken\nSubject: s\n\n") + body},
		{name: "send as denied", msg: crlf("From: boss@contoso.test\nTo: a@example.com\n\n") + body},
		{name: "throttled", script: func(g *devsandbox.GraphServer) { g.FailNext(mailbox, devsandbox.GraphThrottled(30)) },
			msg: crlf("To: a@example.com\n\n") + body, wantOpen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour})
			if tt.script != nil {
				tt.script(f.sb.Graph)
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
			sent := f.sb.Graph.PeakConcurrency(mailbox)
			_, err := f.tr.Begin(context.Background(), transport.Envelope{ID: "m2", Account: mailbox, From: mailbox})
			te := transport.As(err)
			if te.Kind != transport.KindCircuit || te.Limit != "account" || te.Reply.Code != 451 || te.RetryAt.IsZero() {
				t.Errorf("Begin with the circuit open: %v (%s, kind %d, limit %q)", err, transport.ReplyText(te.Reply), te.Kind, te.Limit)
			}
			if f.sb.Graph.PeakConcurrency(mailbox) != sent {
				t.Error("Graph was contacted with the circuit open")
			}
		})
	}
}

// TestReservationKeptOnlyWhenSent: a failed send gives the daily quota
// back; a sent message keeps it.
func TestReservationKeptOnlyWhenSent(t *testing.T) {
	f := newFixture(t)
	f.tr.Limits = limits.NewAccountLimits(0, 0, 1, 0, 0)
	f.sb.Graph.FailNext(mailbox, devsandbox.GraphUnavailable)
	msg := crlf("To: a@example.com\n\n") + body
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, msg); err == nil {
		t.Fatal("the scripted 503 did not fail the delivery")
	}
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, msg); err != nil {
		t.Fatalf("after a failed send: %v", err)
	}
	_, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, msg)
	if te := transport.As(err); te.Kind != transport.KindLimit || te.Reply.Code != 451 {
		t.Fatalf("over the daily quota: %v (%s)", err, transport.ReplyText(te.Reply))
	}
	if n := len(f.sb.Graph.Messages()); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}
}
