package server_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The relay holds replies until it reads again (RFC 2920 §3.2). A client
// that waits for each reply gets every one of them, across STARTTLS and a
// two-step AUTH, while the relay's handlers wait for the provider; a
// pipelining client gets its replies in order, a refused recipient's
// included.
func TestRelayRepliesWithAndWithoutPipelining(t *testing.T) {
	h := newHarness(t, harnessOptions{listenerTLS: "starttls"})
	h.sb.SMTP.SetRcptReply("nobody@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	t.Run("one command at a time", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.must("EHLO client.test", "250")
		rc.must("STARTTLS", "220")
		tc := tls.Client(rc.c, &tls.Config{RootCAs: h.sb.CA.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		rc.c, rc.r = tc, bufio.NewReader(tc)
		rc.must("EHLO client.test", "250")
		rc.must("AUTH LOGIN", "334")
		rc.must(b64(appClient), "334")
		rc.must(b64(h.password), "235")
		rc.must("MAIL FROM:<"+alice+">", "250")
		rc.must("RCPT TO:<one@example.net>", "250")
		rc.must("RCPT TO:<nobody@example.net>", "550")
		rc.must("DATA", "354")
		rc.must("Subject: step by step\r\n\r\nbody\r\n.", "250")
		rc.must("QUIT", "221")
		if got := rc.reply(); !strings.HasPrefix(got, "EOF") {
			t.Errorf("after QUIT: %q, want the connection closed", got)
		}
	})

	t.Run("pipelined", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.must("EHLO client.test", "250")
		rc.must("STARTTLS", "220")
		tc := tls.Client(rc.c, &tls.Config{RootCAs: h.sb.CA.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		rc.c, rc.r = tc, bufio.NewReader(tc)
		rc.must("EHLO client.test", "250")
		rc.must("AUTH PLAIN "+b64("\x00"+appClient+"\x00"+h.password), "235")
		if _, err := tc.Write([]byte("MAIL FROM:<" + alice + ">\r\nRCPT TO:<nobody@example.net>\r\nRCPT TO:<two@example.net>\r\nDATA\r\n")); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"250", "550", "250", "354"} {
			rc.expect(want)
		}
		rc.must("Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nQUIT", "250")
		rc.expect("250")
		rc.expect("221")
	})

	msgs := h.sb.SMTP.Messages()
	if len(msgs) != 2 {
		t.Fatalf("the provider got %d messages, want 2", len(msgs))
	}
	for i, want := range []string{"one@example.net", "two@example.net"} {
		if got := strings.Join(msgs[i].To, ","); got != want {
			t.Errorf("message %d went to %s, want %s", i, got, want)
		}
	}
}
