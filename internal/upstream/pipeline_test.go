package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

const sandboxUser = "sender@example.com"

// socketWrites counts the writes to one connection's socket.
type socketWrites struct {
	net.Conn
	n      atomic.Int64
	opened int64 // writes of the handshake and AUTH
}

func (w *socketWrites) Write(p []byte) (int, error) {
	w.n.Add(1)
	return w.Conn.Write(p)
}

// countedOpener opens authenticated connections to the sandbox provider
// through the Sender's own handshake and AUTH, counting the writes of
// each connection's socket.
type countedOpener struct {
	s     *Sender
	token string

	mu    sync.Mutex
	conns []*socketWrites
}

func (o *countedOpener) Open(context.Context) (*Conn, error) {
	raw, err := net.Dial("tcp", o.s.set.Address)
	if err != nil {
		return nil, err
	}
	w := &socketWrites{Conn: raw}
	c, err := o.s.handshake(w)
	if err != nil {
		raw.Close()
		return nil, err
	}
	c.timeout = time.Minute
	if err := o.s.auth(c, o.token); err != nil {
		raw.Close()
		return nil, err
	}
	w.opened = w.n.Load()
	o.mu.Lock()
	o.conns = append(o.conns, w)
	o.mu.Unlock()
	return &Conn{c: c, log: o.s.log, provider: "sandbox", m: o.s.set.Metrics, state: "in_use", created: time.Now()}, nil
}

// writes returns how many writes connection i made so far.
func (o *countedOpener) writes(i int) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns[i].n.Load()
}

func (o *countedOpener) opened() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.conns)
}

// sandboxTransport is a Transport to the sandbox provider with a pool of
// counted connections, one of them open and idle already.
type sandboxTransport struct {
	*Transport
	sb     *devsandbox.Sandbox
	opener *countedOpener
}

func newSandboxTransport(t *testing.T, opts devsandbox.Options) *sandboxTransport {
	t.Helper()
	sb := testutil.Sandbox(t, opts)
	sb.Tokens.AddClient("client", "secret")
	rt := sb.Tokens.IssueRefreshToken("client", sandboxUser, config.GoogleScope)
	src := oauth.NewSource(oauth.Settings{
		Name: "test", Flow: config.FlowRefreshToken, TokenURL: sb.Tokens.URL, ClientID: "client",
		ClientSecret: func() (string, error) { return "secret", nil },
		RefreshToken: func() (string, error) { return rt, nil },
		HTTPClient:   oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: sb.CA.Pool}),
	})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSender(Settings{
		Address:   sb.SMTP.Addr,
		TLSConfig: &tls.Config{RootCAs: sb.CA.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		LocalName: "relay.test", ImplicitTLS: opts.ImplicitTLS,
	}, sandboxUser, nil, nil)
	o := &countedOpener{s: s, token: tok}
	pool := &Pool{sender: o, set: PoolSettings{MaxConnections: 4, WaitTimeout: 5 * time.Second}, stop: make(chan struct{})}
	t.Cleanup(pool.Close)
	c, _, err := pool.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pool.Put(c)
	return &sandboxTransport{Transport: &Transport{Account: sandboxUser, Provider: "sandbox", Pool: pool}, sb: sb, opener: o}
}

func replyOfCode(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

var testEnvelope = transport.Envelope{ID: "M1", Account: sandboxUser, From: sandboxUser}

func sendAll(t *testing.T, tr transport.Transport, rcpts ...string) ([]error, error) {
	t.Helper()
	bt := tr.(transport.EnvelopeBeginner)
	ctx := context.Background()
	d, errs, err := bt.BeginWith(ctx, testEnvelope, rcpts, nil)
	if err != nil {
		return nil, err
	}
	defer d.Abort()
	accepted := 0
	for _, e := range errs {
		if e == nil {
			accepted++
		}
	}
	if accepted == 0 {
		return errs, nil
	}
	_, err = d.Body(ctx, memBody("Subject: pipelined\r\n\r\nbody\r\n"))
	return errs, err
}

type memBody string

func (m memBody) Reader() (io.Reader, error) { return strings.NewReader(string(m)), nil }
func (m memBody) Size() int64                { return int64(len(m)) }

// codes lists each error's reply code (0: nil).
func codes(errs []error) []int {
	out := make([]int, len(errs))
	for i, err := range errs {
		if err != nil {
			out[i] = transport.As(err).Reply.Code
		}
	}
	return out
}

// With PIPELINING, MAIL, every RCPT and DATA leave in one write; each
// recipient keeps its own verdict and the message goes to the accepted
// ones only.
func TestBeginWithPipelinesTheEnvelope(t *testing.T) {
	tr := newSandboxTransport(t, devsandbox.Options{})
	tr.sb.SMTP.SetRcptReply("nobody@example.net", replyOfCode(550, smtp.EnhancedCode{5, 1, 1}, "no such user"))
	tr.sb.SMTP.SetRcptReply("later@example.net", replyOfCode(452, smtp.EnhancedCode{4, 2, 2}, "mailbox full"))
	before := tr.opener.writes(0)
	bt := tr.Transport
	d, errs, err := bt.BeginWith(context.Background(), testEnvelope, []string{"a@example.net", "nobody@example.net", "later@example.net", "b@example.net"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := tr.opener.writes(0) - before; n != 1 {
		t.Errorf("MAIL, 4 RCPTs and DATA took %d writes, want 1", n)
	}
	if got := codes(errs); len(got) != 4 || got[0] != 0 || got[1] != 550 || got[2] != 452 || got[3] != 0 {
		t.Fatalf("recipient verdicts %v, want [0 550 452 0]", got)
	}
	if k := transport.As(errs[1]).Kind; k != transport.KindProvider {
		t.Errorf("refused recipient: kind %d, want the provider's answer", k)
	}
	before = tr.opener.writes(0)
	if _, err := d.Body(context.Background(), memBody("Subject: pipelined\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if n := tr.opener.writes(0) - before; n != 1 {
		t.Errorf("the message took %d writes after the pipelined DATA, want 1", n)
	}
	msgs := tr.sb.SMTP.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "a@example.net,b@example.net" {
		t.Fatalf("provider got %+v, want one message to a and b", msgs)
	}
	if n := tr.opener.opened(); n != 1 {
		t.Errorf("%d connections opened, want the pooled one only", n)
	}
}

// When every recipient is refused the provider refuses the pipelined
// DATA (RFC 2920 §3.1) and no message is sent; the connection stays in
// step and serves the next message.
func TestBeginWithAllRecipientsRefused(t *testing.T) {
	tr := newSandboxTransport(t, devsandbox.Options{})
	for _, r := range []string{"x@example.net", "y@example.net"} {
		tr.sb.SMTP.SetRcptReply(r, replyOfCode(550, smtp.EnhancedCode{5, 1, 1}, "no such user"))
	}
	errs, err := sendAll(t, tr.Transport, "x@example.net", "y@example.net")
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(errs); len(got) != 2 || got[0] != 550 || got[1] != 550 {
		t.Fatalf("recipient verdicts %v, want [550 550]", got)
	}
	if _, err := sendAll(t, tr.Transport, "ok@example.net"); err != nil {
		t.Fatalf("next message on the same connection: %v", err)
	}
	if msgs := tr.sb.SMTP.Messages(); len(msgs) != 1 || msgs[0].To[0] != "ok@example.net" {
		t.Fatalf("provider got %+v, want only the second message", msgs)
	}
	if n := tr.opener.opened(); n != 1 {
		t.Errorf("%d connections opened, want 1: the refused envelope left it usable", n)
	}
}

// A refused MAIL is BeginWith's error, as Begin's; the replies to the
// RCPTs and DATA pipelined behind it are read and dropped, so that the
// connection serves the next message.
func TestBeginWithMailRefused(t *testing.T) {
	tr := newSandboxTransport(t, devsandbox.Options{})
	tr.sb.SMTP.FailNextMail(replyOfCode(550, smtp.EnhancedCode{5, 7, 1}, "sender refused"))
	errs, err := sendAll(t, tr.Transport, "a@example.net", "b@example.net")
	te := transport.As(err)
	if err == nil || errs != nil || te.Reply.Code != 550 || te.Kind != transport.KindProvider {
		t.Fatalf("BeginWith = %v, %v; want MAIL's 550 and no recipient verdicts", errs, err)
	}
	if _, err := sendAll(t, tr.Transport, "c@example.net"); err != nil {
		t.Fatalf("next message on the same connection: %v", err)
	}
	if n := tr.opener.opened(); n != 1 {
		t.Errorf("%d connections opened, want 1", n)
	}
	if msgs := tr.sb.SMTP.Messages(); len(msgs) != 1 || msgs[0].To[0] != "c@example.net" {
		t.Fatalf("provider got %+v", msgs)
	}
}

// A provider without PIPELINING gets one command at a time, as from
// Begin and AddRcpt, with the same verdicts.
func TestBeginWithoutPipelining(t *testing.T) {
	tr := newSandboxTransport(t, devsandbox.Options{Without: []string{devsandbox.ExtPipelining}})
	tr.sb.SMTP.SetRcptReply("nobody@example.net", replyOfCode(550, smtp.EnhancedCode{5, 1, 1}, "no such user"))
	before := tr.opener.writes(0)
	errs, err := sendAll(t, tr.Transport, "a@example.net", "nobody@example.net")
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(errs); got[0] != 0 || got[1] != 550 {
		t.Fatalf("recipient verdicts %v, want [0 550]", got)
	}
	// MAIL, RCPT, RCPT, DATA, the message.
	if n := tr.opener.writes(0) - before; n != 5 {
		t.Errorf("%d writes, want 5: one per command", n)
	}
	c, _, err := tr.Pool.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.c.has("PIPELINING") {
		t.Error("the provider offered PIPELINING")
	}
	tr.Pool.Put(c)
	if msgs := tr.sb.SMTP.Messages(); len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "a@example.net" {
		t.Fatalf("provider got %+v", msgs)
	}
}

// fakeProvider is a plain-TCP provider offering extensions (PIPELINING
// and 8BITMIME unless told) whose replies come from respond (conn counts
// connections from 1; line is a command, or "." for the end of a
// message). A reply "354 ..." to DATA starts a message; hangUp closes the
// connection instead of answering.
type fakeProvider struct {
	ln         net.Listener
	respond    func(conn int, line string) (reply string, hangUp bool)
	extensions []string
	conns      atomic.Int64
}

func startFakeProvider(t *testing.T, respond func(conn int, line string) (string, bool)) *fakeProvider {
	t.Helper()
	return startFakeProviderOffering(t, []string{"PIPELINING", "8BITMIME"}, respond)
}

func startFakeProviderOffering(t *testing.T, extensions []string, respond func(conn int, line string) (string, bool)) *fakeProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &fakeProvider{ln: ln, respond: respond, extensions: extensions}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, int(p.conns.Add(1)))
		}
	}()
	return p
}

func (p *fakeProvider) serve(c net.Conn, n int) {
	defer c.Close()
	r := bufio.NewReader(c)
	io.WriteString(c, "220 fake\r\n")
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case inData && line != ".":
			continue
		case strings.HasPrefix(line, "EHLO"):
			io.WriteString(c, p.ehloReply())
			continue
		}
		inData = false
		reply, hangUp := p.respond(n, line)
		if hangUp {
			return
		}
		inData = strings.HasPrefix(line, "DATA") && strings.HasPrefix(reply, "354")
		io.WriteString(c, reply+"\r\n")
	}
}

func (p *fakeProvider) ehloReply() string {
	reply := "250-fake\r\n"
	for _, ext := range p.extensions {
		reply += "250-" + ext + "\r\n"
	}
	return reply + "250 HELP\r\n"
}

// accepting answers as a provider that accepts everything.
func accepting(line string) string {
	switch {
	case strings.HasPrefix(line, "DATA"):
		return "354 go ahead"
	case line == ".":
		return "250 2.0.0 OK queued"
	case strings.HasPrefix(line, "QUIT"):
		return "221 bye"
	}
	return "250 2.0.0 OK"
}

// fakeOpener opens connections to a fake provider (greeting and EHLO
// done, no AUTH).
type fakeOpener struct {
	addr string
	mu   sync.Mutex
	all  []*socketWrites
}

func (o *fakeOpener) Open(context.Context) (*Conn, error) {
	raw, err := net.Dial("tcp", o.addr)
	if err != nil {
		return nil, err
	}
	w := &socketWrites{Conn: raw}
	c := newSMTPClient(w, 10*time.Second)
	if err := c.greet(); err != nil {
		return nil, err
	}
	if err := c.hello("relay.test"); err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.all = append(o.all, w)
	o.mu.Unlock()
	return &Conn{c: c, provider: "fake", m: NewMetrics(nil), state: "in_use", created: time.Now()}, nil
}

// countingPool is a Pool that counts discarded connections.
type countingPool struct {
	*Pool
	discarded atomic.Int64
}

func (p *countingPool) Discard(c *Conn) {
	p.discarded.Add(1)
	p.Pool.Discard(c)
}

func fakeTransport(t *testing.T, respond func(conn int, line string) (string, bool)) (*Transport, *countingPool, *fakeProvider) {
	t.Helper()
	prov := startFakeProvider(t, respond)
	tr, pool := fakeTransportTo(t, prov)
	return tr, pool, prov
}

// fakeTransportTo is a Transport to prov over a pool that counts the
// connections it discards.
func fakeTransportTo(t *testing.T, prov *fakeProvider) (*Transport, *countingPool) {
	t.Helper()
	pool := &countingPool{Pool: &Pool{sender: &fakeOpener{addr: prov.ln.Addr().String()}, set: PoolSettings{MaxConnections: 4, WaitTimeout: 5 * time.Second}, stop: make(chan struct{})}}
	t.Cleanup(pool.Close)
	// 7-bit: the fake provider's 8BITMIME is not what these tests are about.
	return &Transport{Account: sandboxUser, Provider: "fake", Pool: pool}, pool
}

// The envelope's edge cases with a scripted provider.
func TestBeginWithProviderEdgeCases(t *testing.T) {
	t.Run("DATA accepted without recipients gets a lone dot", func(t *testing.T) {
		var dots atomic.Int64
		tr, pool, prov := fakeTransport(t, func(_ int, line string) (string, bool) {
			switch {
			case strings.HasPrefix(line, "RCPT TO:<gone"):
				return "550 5.1.1 no such user", false
			case line == "." && dots.Add(1) == 1:
				return "554 5.5.1 no valid recipients", false
			}
			return accepting(line), false
		})
		errs, err := sendAll(t, tr, "gone@example.net")
		if err != nil || len(errs) != 1 || errs[0] == nil {
			t.Fatalf("BeginWith = %v, %v; want the recipient refused", errs, err)
		}
		if dots.Load() != 1 {
			t.Errorf("the empty message was ended by %d dots, want 1", dots.Load())
		}
		if _, err := sendAll(t, tr, "ok@example.net"); err != nil || dots.Load() != 2 {
			t.Fatalf("next message: %v", err)
		}
		if n, d := prov.conns.Load(), pool.discarded.Load(); n != 1 || d != 0 {
			t.Errorf("%d connections, %d discarded; want 1 connection kept", n, d)
		}
	})
	t.Run("DATA refused for now is retried on another connection", func(t *testing.T) {
		var datas atomic.Int64
		tr, _, _ := fakeTransport(t, func(_ int, line string) (string, bool) {
			if strings.HasPrefix(line, "DATA") && datas.Add(1) == 1 {
				return "451 4.3.0 try again", false
			}
			return accepting(line), false
		})
		errs, err := sendAll(t, tr, "a@example.net")
		if err != nil || errs[0] != nil {
			t.Fatalf("BeginWith and Body = %v, %v; want the message delivered on the retry", errs, err)
		}
		if datas.Load() != 2 {
			t.Errorf("%d DATA commands, want 2", datas.Load())
		}
	})
	t.Run("connection lost within the group is retried on a fresh one", func(t *testing.T) {
		tr, _, prov := fakeTransport(t, func(conn int, line string) (string, bool) {
			if conn == 1 && strings.HasPrefix(line, "RCPT") {
				return "", true
			}
			return accepting(line), false
		})
		errs, err := sendAll(t, tr, "a@example.net", "b@example.net")
		if err != nil || errs[0] != nil || errs[1] != nil {
			t.Fatalf("= %v, %v; want both recipients delivered", errs, err)
		}
		if n := prov.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("a provider closing at MAIL is retried on a fresh one", func(t *testing.T) {
		tr, _, prov := fakeTransport(t, func(conn int, line string) (string, bool) {
			if conn == 1 && strings.HasPrefix(line, "MAIL") {
				return "421 4.7.0 closing", false
			}
			return accepting(line), false
		})
		if errs, err := sendAll(t, tr, "a@example.net"); err != nil || errs[0] != nil {
			t.Fatalf("= %v, %v", errs, err)
		}
		if n := prov.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("Abort while the provider awaits the message drops the connection", func(t *testing.T) {
		tr, pool, _ := fakeTransport(t, func(_ int, line string) (string, bool) { return accepting(line), false })
		d, errs, err := tr.BeginWith(context.Background(), testEnvelope, []string{"a@example.net"}, nil)
		if err != nil || errs[0] != nil {
			t.Fatal(errs, err)
		}
		d.Abort()
		if n := pool.discarded.Load(); n != 1 {
			t.Errorf("%d connections discarded, want the one awaiting the message", n)
		}
	})
}

// The envelope replayed on a new connection (a stale pooled one) goes out
// in one write too.
func TestReplayIsPipelined(t *testing.T) {
	tr := newSandboxTransport(t, devsandbox.Options{})
	ctx := context.Background()
	d, err := tr.Begin(ctx, testEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a@example.net", "b@example.net"} {
		if err := d.AddRcpt(ctx, r, transport.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr.sb.SMTP.CloseAllConnections()
	if _, err := d.Body(ctx, memBody("Subject: replayed\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if n := tr.opener.opened(); n != 2 {
		t.Fatalf("%d connections opened, want 2", n)
	}
	if msgs := tr.sb.SMTP.Messages(); len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "a@example.net,b@example.net" {
		t.Fatalf("provider got %+v", msgs)
	}
	// The replayed MAIL and RCPTs, DATA, the message.
	tr.opener.mu.Lock()
	fresh := tr.opener.conns[1]
	tr.opener.mu.Unlock()
	if n := fresh.n.Load() - fresh.opened; n != 3 {
		t.Errorf("%d writes on the new connection after AUTH, want 3", n)
	}
}
