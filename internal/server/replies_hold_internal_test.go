package server

import (
	"crypto/tls"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// slowLogoutBackend's sessions take a while in Logout, as the relay's does
// when a transaction is open: Logout aborts the upstream transaction (an
// RSET round trip to the provider, bounded by command_timeout).
type slowLogoutBackend struct{ gatedBackend }

func (b *slowLogoutBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &slowLogoutSession{gatedSession{b: &b.gatedBackend, c: c}}, nil
}

type slowLogoutSession struct{ gatedSession }

func (s *slowLogoutSession) Logout() error { time.Sleep(3 * time.Second); return nil }

// secondMailBackend's sessions take 3 s over their second MAIL, as a
// direct-mode MAIL waiting for the pool, a token or a connect.
type secondMailBackend struct{ gatedBackend }

func (b *secondMailBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &secondMailSession{gatedSession: gatedSession{b: &b.gatedBackend, c: c}}, nil
}

type secondMailSession struct {
	gatedSession
	mails int
}

func (s *secondMailSession) Mail(string, *smtp.MailOptions) error {
	s.mails++
	if s.mails == 2 {
		time.Sleep(3 * time.Second)
	}
	return nil
}

// A reply is held at most maxHoldTime: a session that blocks before its
// next read does not keep the client waiting for replies it has earned
// (QUIT's 221 while Logout aborts an upstream transaction; a message's
// final 250 while the next MAIL, sent in the same write as the final dot
// as RFC 2920 §3.1 allows, waits for the provider).
func TestHeldReplyLeavesWhileTheSessionBlocks(t *testing.T) {
	tests := []struct {
		name    string
		backend smtp.Backend
		steps   func(c *stepClient)
		want    int
	}{
		{"QUIT while Logout is slow", &slowLogoutBackend{}, func(c *stepClient) {
			c.send("QUIT\r\n")
		}, 221},
		{"final dot and next MAIL in one write", &secondMailBackend{}, func(c *stepClient) {
			c.cmd("DATA", 354)
			c.send("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@test>\r\n")
		}, 250},
	}
	for _, tt := range tests {
		for _, mode := range listenerModes {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				s := startReplyServerHolding(t, mode, tt.backend, nil, maxHoldTime)
				c := dialReplyServer(t, s, mode)
				c.login(s, mode)
				c.cmd("MAIL FROM:<a@test>", 250)
				c.cmd("RCPT TO:<b@test>", 250)
				start := time.Now()
				tt.steps(c)
				c.expect(tt.want)
				if d := time.Since(start); d > time.Second {
					t.Errorf("the %d arrived after %v: held while the session was busy", tt.want, d.Round(time.Millisecond))
				}
			})
		}
	}
}

// The shutdown deadline closes sessions that are still busy; the replies
// they had earned still leave (a 250 for a message the backend accepted
// must reach the client, or it sends the message again).
func TestForcedCloseSendsHeldReplies(t *testing.T) {
	s, c := holdingAMessagesReply(t)
	s.g.closeConns()
	expectTheMessagesReply(t, c)
}

// holdingAMessagesReply is a session whose message's 250 is held while
// the next MAIL, sent in the same write as the final dot, is busy. The
// hold is a minute: without a flush at a forced close the 250 would
// still be held when the connection closes.
func holdingAMessagesReply(t *testing.T) (*replyServer, *stepClient) {
	t.Helper()
	s := startReplyServerHolding(t, config.TLSNone, &secondMailBackend{}, nil, time.Minute)
	c := dialReplyServer(t, s, config.TLSNone)
	c.login(s, config.TLSNone)
	c.cmd("MAIL FROM:<a@test>", 250)
	c.cmd("RCPT TO:<b@test>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@test>\r\n")
	waitFor(t, func() bool { return heldBytes(s.g) > 0 })
	return s, c
}

func expectTheMessagesReply(t *testing.T, c *stepClient) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.text.ReadLine()
	if err != nil || !strings.HasPrefix(line, "250") {
		t.Fatalf("after the forced close the client read %q, %v; want the message's 250", line, err)
	}
}

// heldBytes is what the generation's connections hold.
func heldBytes(g *generation) int {
	n := 0
	for _, c := range g.snapshot() {
		c.replies.mu.Lock()
		n += len(c.replies.buf)
		c.replies.mu.Unlock()
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// RFC 3207 §4.2: commands pipelined behind STARTTLS are discarded; no
// reply to them appears before or after the handshake.
func TestCommandsBehindStartTLSAreDiscarded(t *testing.T) {
	s := startReplyServerHolding(t, config.TLSStartTLS, &gatedBackend{}, nil, maxHoldTime)
	c := dialReplyServer(t, s, config.TLSStartTLS)
	c.cmd("EHLO client.test", 250)
	c.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<x@test>\r\n")
	c.expect(220)
	tc := tls.Client(c.conn, s.client)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v (a plaintext reply in the TLS stream?)", err)
	}
	c.conn, c.text = tc, textproto.NewConn(tc)
	if msg := c.cmd("EHLO client.test", 250); !strings.Contains(msg, "Hello") {
		t.Fatalf("first reply over TLS is %q, not EHLO's", msg)
	}
	c.cmd("MAIL FROM:<y@test>", 250) // 503: the injected MAIL was taken
}

// The forced close waits for a session that holds its buffer for a
// moment (adding a reply) instead of dropping what it holds.
func TestForcedCloseWaitsForABusyBuffer(t *testing.T) {
	s, c := holdingAMessagesReply(t)
	conns := s.g.snapshot()
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	b := &conns[0].replies
	b.mu.Lock() // the session adding a reply
	closed := make(chan struct{})
	go func() { s.g.closeConns(); close(closed) }()
	time.Sleep(5 * time.Millisecond)
	b.mu.Unlock()
	<-closed
	expectTheMessagesReply(t, c)
}
