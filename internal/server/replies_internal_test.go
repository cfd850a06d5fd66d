package server

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/limits"
)

// These tests run the listener's connection handling (trackedConn and its
// replyBuffer) under a go-smtp server over real sockets, with a backend
// that lets them block its handlers, and count the writes that reach the
// socket.

// countingListener counts the writes to its connections' sockets.
type countingListener struct {
	net.Listener
	writes   atomic.Int64
	maxWrite atomic.Int64
	sndBuf   int // SO_SNDBUF of accepted connections (0: the default)
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.sndBuf > 0 {
		_ = c.(*net.TCPConn).SetWriteBuffer(l.sndBuf)
	}
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	for {
		m := c.l.maxWrite.Load()
		if int64(len(p)) <= m || c.l.maxWrite.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	return c.Conn.Write(p)
}

// gatedBackend accepts everything from user/secret; Mail and Rcpt wait
// for their gates (when set) to close, and MAIL FROM:<close@test> asks
// the connection to close after its 421.
type gatedBackend struct {
	mailGate, rcptGate chan struct{}
}

func (b *gatedBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &gatedSession{b: b, c: c}, nil
}

type gatedSession struct {
	b *gatedBackend
	c *smtp.Conn
}

func (s *gatedSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *gatedSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "user" || pass != "secret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		return nil
	}), nil
}

func (s *gatedSession) Mail(from string, _ *smtp.MailOptions) error {
	if from == "close@test" {
		nc := s.c.Conn()
		if tc, ok := nc.(*tls.Conn); ok {
			nc = tc.NetConn()
		}
		nc.(interface{ CloseAfterNextWrite() }).CloseAfterNextWrite()
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "reconnect"}
	}
	wait(s.b.mailGate)
	return nil
}

func (s *gatedSession) Rcpt(string, *smtp.RcptOptions) error { wait(s.b.rcptGate); return nil }

func (s *gatedSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *gatedSession) Reset()        {}
func (s *gatedSession) Logout() error { return nil }

func wait(gate chan struct{}) {
	if gate != nil {
		<-gate
	}
}

// replyServer is a listener (with one generation) in front of a backend.
type replyServer struct {
	addr   string
	ln     *countingListener
	g      *generation
	client *tls.Config
}

func startReplyServer(t *testing.T, mode string, be smtp.Backend, tune func(*smtp.Server, *countingListener)) *replyServer {
	t.Helper()
	return startReplyServerHolding(t, mode, be, tune, time.Minute)
}

// startReplyServerHolding is startReplyServer with connections holding a
// reply for at most holdFor (the relay's own: maxHoldTime).
func startReplyServerHolding(t *testing.T, mode string, be smtp.Backend, tune func(*smtp.Server, *countingListener), holdFor time.Duration) *replyServer {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ln := &countingListener{Listener: raw}
	srv := smtp.NewServer(be)
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if mode == config.TLSStartTLS {
		srv.TLSConfig = serverTLS
	}
	if tune != nil {
		tune(srv, ln)
	}
	g := &generation{cfg: &config.Listener{TLSMode: mode}, srv: srv, handoff: newHandoff(nil), tls: serverTLS, holdFor: holdFor}
	l := &listener{addr: raw.Addr().String(), ln: ln, log: hclog.NewNullLogger(), perIP: limits.NewPerIP(0, 0, 0)}
	l.install(g)
	l.start()
	t.Cleanup(func() {
		if g := l.stopAccepting(); g != nil {
			g.closeConns()
			<-g.drained()
		}
	})
	return &replyServer{addr: raw.Addr().String(), ln: ln, g: g,
		client: &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
}

// stepClient speaks SMTP one command at a time, each reply awaited with
// a deadline: a reply the server holds back fails the test instead of
// hanging it.
type stepClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

func dialReplyServer(t *testing.T, s *replyServer, mode string) *stepClient {
	t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if mode == config.TLSImplicit {
		conn = tls.Client(conn, s.client)
	}
	c := &stepClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// expect reads one reply and checks its code.
func (c *stepClient) expect(code int) string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := c.text.ReadResponse(code)
	if err != nil {
		c.t.Fatalf("waiting for a %d reply: %v", code, err)
	}
	return msg
}

// cmd sends one command and waits for its reply.
func (c *stepClient) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// send writes raw protocol text in one write.
func (c *stepClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *stepClient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("STARTTLS", 220)
	tc := tls.Client(c.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.text = tc, textproto.NewConn(tc)
}

// expectClosed checks that the server closed the connection.
func (c *stepClient) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := c.text.ReadLine(); !errors.Is(err, io.EOF) {
		c.t.Fatalf("want the connection closed, got %q, %v", line, err)
	}
}

var plainCredentials = base64.StdEncoding.EncodeToString([]byte("\x00user\x00secret"))

// login says EHLO (after STARTTLS in that mode) and authenticates.
func (c *stepClient) login(s *replyServer, mode string) {
	c.t.Helper()
	c.cmd("EHLO client.test", 250)
	if mode == config.TLSStartTLS {
		c.startTLS(s.client)
		c.cmd("EHLO client.test", 250)
	}
	c.cmd("AUTH PLAIN", 334)
	c.cmd(plainCredentials, 235)
}

var listenerModes = []string{config.TLSNone, config.TLSStartTLS, config.TLSImplicit}

// A client that waits for each reply before its next command gets every
// reply: the server sends what it holds whenever it waits for input (at
// STARTTLS's handshake, at AUTH's 334, at DATA's 354 too).
func TestEveryReplyReachesAClientThatWaits(t *testing.T) {
	for _, mode := range listenerModes {
		t.Run(mode, func(t *testing.T) {
			s := startReplyServer(t, mode, &gatedBackend{}, nil)
			c := dialReplyServer(t, s, mode)
			c.login(s, mode)
			for i := 0; i < 2; i++ {
				c.cmd("MAIL FROM:<a@test>", 250)
				c.cmd("RCPT TO:<b@test>", 250)
				c.cmd("DATA", 354)
				c.cmd("Subject: step\r\n\r\nbody\r\n.", 250)
			}
			c.cmd("RSET", 250)
			c.cmd("NOOP", 250)
			c.cmd("QUIT", 221)
			c.expectClosed()
		})
	}
}

// The replies to pipelined commands leave in one write, and a multi-line
// EHLO reply in one write instead of one per line.
func TestPipelinedRepliesLeaveInOneWrite(t *testing.T) {
	for _, mode := range []string{config.TLSNone, config.TLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			s := startReplyServer(t, mode, &gatedBackend{}, nil)
			c := dialReplyServer(t, s, mode)
			writes := func(step func()) int64 {
				t.Helper()
				before := s.ln.writes.Load()
				step()
				// The client read every reply of the step, and the server
				// writes nothing before the client's next command.
				return s.ln.writes.Load() - before
			}
			if n := writes(func() { c.cmd("EHLO client.test", 250) }); n != 1 {
				t.Errorf("EHLO reply: %d writes, want 1", n)
			}
			c.cmd("AUTH PLAIN "+plainCredentials, 235)
			n := writes(func() {
				c.send("MAIL FROM:<a@test>\r\nRCPT TO:<b@test>\r\nRCPT TO:<c@test>\r\nDATA\r\n")
				c.expect(250)
				c.expect(250)
				c.expect(250)
				c.expect(354)
			})
			if n != 1 {
				t.Errorf("MAIL, RCPT, RCPT, DATA pipelined: %d writes for their replies, want 1", n)
			}
			// RFC 2920 §3.1: the message may open the next group.
			n = writes(func() {
				c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n")
				c.expect(250)
				c.expect(250)
				c.expect(250)
			})
			if n != 1 {
				t.Errorf("message, RSET, NOOP pipelined: %d writes, want 1", n)
			}
		})
	}
}

// While a pipelined command's handler is busy, the replies to the
// commands before it wait and then leave with its own; a client waiting
// for each reply gets it as soon as its command's handler returned, even
// though the next handler will block.
func TestBusyHandlerHoldsOnlyPipelinedReplies(t *testing.T) {
	t.Run("pipelined", func(t *testing.T) {
		be := &gatedBackend{rcptGate: make(chan struct{})}
		s := startReplyServer(t, config.TLSNone, be, nil)
		c := dialReplyServer(t, s, config.TLSNone)
		c.cmd("EHLO client.test", 250)
		before := s.ln.writes.Load()
		c.send("MAIL FROM:<a@test>\r\nRCPT TO:<b@test>\r\n")
		close(be.rcptGate)
		c.expect(250)
		c.expect(250)
		if n := s.ln.writes.Load() - before; n != 1 {
			t.Errorf("MAIL and RCPT pipelined, RCPT busy: %d writes, want 1", n)
		}
	})
	t.Run("one at a time", func(t *testing.T) {
		be := &gatedBackend{mailGate: make(chan struct{}), rcptGate: make(chan struct{})}
		s := startReplyServer(t, config.TLSNone, be, nil)
		c := dialReplyServer(t, s, config.TLSNone)
		c.cmd("EHLO client.test", 250)
		c.send("MAIL FROM:<a@test>\r\n")
		close(be.mailGate)
		c.expect(250)
		c.send("RCPT TO:<b@test>\r\n")
		close(be.rcptGate)
		c.expect(250)
		c.cmd("DATA", 354)
		c.cmd(".", 250)
	})
}

// A reply after which the session ends reaches the client before the
// connection closes: QUIT, a session's CloseAfterNextWrite (the relay's
// 421 after a reload), go-smtp's idle timeout and the listener's closing
// of idle sessions.
func TestReplyBeforeCloseIsSent(t *testing.T) {
	tests := []struct {
		name string
		tune func(*smtp.Server, *countingListener)
		end  func(*replyServer, *stepClient)
		want int
	}{
		{"QUIT", nil, func(_ *replyServer, c *stepClient) { c.send("QUIT\r\n") }, 221},
		{"close after the reply", nil, func(_ *replyServer, c *stepClient) { c.send("MAIL FROM:<close@test>\r\n") }, 421},
		{"idle timeout", func(s *smtp.Server, _ *countingListener) { s.ReadTimeout = 200 * time.Millisecond }, func(*replyServer, *stepClient) {}, 421},
		{"idle sessions closed", nil, func(s *replyServer, _ *stepClient) { s.g.closeIdle() }, 421},
	}
	for _, tc := range tests {
		for _, mode := range []string{config.TLSNone, config.TLSImplicit} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				s := startReplyServer(t, mode, &gatedBackend{}, tc.tune)
				c := dialReplyServer(t, s, mode)
				c.cmd("EHLO client.test", 250)
				tc.end(s, c)
				c.expect(tc.want)
				c.expectClosed()
			})
		}
	}
}

// Replies to a long pipeline leave in writes of at most about
// maxHeldReplies: the buffer does not grow with the pipeline.
func TestHeldRepliesAreBounded(t *testing.T) {
	s := startReplyServer(t, config.TLSNone, &gatedBackend{}, nil)
	c := dialReplyServer(t, s, config.TLSNone)
	c.cmd("EHLO client.test", 250)
	const noops = 2000
	before := s.ln.writes.Load()
	go io.WriteString(c.conn, strings.Repeat("NOOP\r\n", noops))
	replyLen := 0
	for i := 0; i < noops; i++ {
		replyLen = len(c.expect(250))
	}
	writes := s.ln.writes.Load() - before
	maxWrite := s.ln.maxWrite.Load()
	if limit := int64(maxHeldReplies + replyLen + 16); maxWrite > limit {
		t.Errorf("largest write %d bytes, want at most %d", maxWrite, limit)
	}
	if minWrites := int64(noops * replyLen / maxHeldReplies); writes < minWrites || writes >= noops/4 {
		t.Errorf("%d replies in %d writes, want between %d and %d", noops, writes, minWrites, noops/4)
	}
}

// A flush at read time keeps go-smtp's write deadline: a client that
// pipelines without ever reading cannot hold the session forever.
func TestFlushKeepsTheWriteDeadline(t *testing.T) {
	s := startReplyServer(t, config.TLSNone, &gatedBackend{}, func(srv *smtp.Server, ln *countingListener) {
		srv.WriteTimeout = 300 * time.Millisecond
		ln.sndBuf = 4096
	})
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	go func() {
		// Never reads: its receive window and the server's send buffer
		// fill, and the server's flush hits its deadline.
		noops := []byte(strings.Repeat("NOOP\r\n", 1000))
		for {
			if _, err := conn.Write(noops); err != nil {
				return
			}
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); len(s.g.snapshot()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the connection never reached the server")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-s.g.drained():
	case <-time.After(20 * time.Second):
		t.Fatal("the session still runs: the flush did not keep the write deadline")
	}
}
