package server_test

import (
	"bufio"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
)

// rawClientX is an authenticated raw SMTP session with the relay, for
// commands go-smtp's client would not send (no BODY=8BITMIME, no
// SMTPUTF8, bare LFs).
type rawClientX struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRawX(t *testing.T, h *harness) *rawClientX {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClientX{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220")
	c.send("EHLO client.test\r\n")
	c.expect("250")
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+appClient+"\x00"+h.password)) + "\r\n")
	c.expect("235")
	return c
}

func (c *rawClientX) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (c *rawClientX) reply() string {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading a reply: %v", err)
		}
		if len(line) < 4 || line[3] == ' ' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (c *rawClientX) expect(code string) {
	c.t.Helper()
	if line := c.reply(); !strings.HasPrefix(line, code) {
		c.t.Fatalf("reply %q, want %s", line, code)
	}
}

// Review X: a client that does not say SMTPUTF8 but gives a UTF-8
// address has it passed raw to a provider that does not offer SMTPUTF8.
// mailParams/rcptParams check non-ASCII addresses only when the client
// declared SMTPUTF8 (internal/upstream/params.go:63-71, 94-96), and
// nothing else does (go-smtp's server accepts UTF-8 in paths without the
// parameter). RFC 6531 §3.4: a client MUST NOT send an internationalized
// address to a server that did not offer SMTPUTF8; the relay should
// refuse it with 553 5.6.7 as README "Replies" says.
func TestReviewXUTF8AddressWithoutTheParameter(t *testing.T) {
	h := newHarness(t, harnessOptions{without: []string{devsandbox.ExtSMTPUTF8}})
	c := dialRawX(t, h)
	c.send("MAIL FROM:<" + alice + ">\r\n")
	c.expect("250")
	c.send("RCPT TO:<" + utf8Rcpt + ">\r\n")
	got := c.reply()
	for _, line := range h.sb.SMTP.Commands("RCPT") {
		if strings.ContainsFunc(line, func(r rune) bool { return r >= 0x80 }) {
			t.Errorf("the provider without SMTPUTF8 got %q", line)
		}
	}
	if !strings.HasPrefix(got, "553 5.6.7") {
		t.Errorf("RCPT of a UTF-8 address without SMTPUTF8: %q, want 553 5.6.7", got)
	}
}

// Review X: a client that sends 8-bit content without declaring
// BODY=8BITMIME (old devices, scripts) has it passed unchecked to a
// provider without 8BITMIME: checkContent (internal/upstream/transport.go
// checkContent) scans only when BODY=8BITMIME was given. README step 5:
// "an 8-bit message to a provider without 8BITMIME gets 554 5.6.3". The
// existing test (TestProviderWithoutAnExtension "8-bit body") sends with
// go-smtp's client, which always adds BODY=8BITMIME, so it never covered
// this.
func TestReviewX8BitBodyWithoutBODYParameter(t *testing.T) {
	h := newHarness(t, harnessOptions{without: []string{devsandbox.Ext8BitMIME}})
	c := dialRawX(t, h)
	c.send("MAIL FROM:<" + alice + ">\r\n")
	c.expect("250")
	c.send("RCPT TO:<r@example.net>\r\n")
	c.expect("250")
	c.send("DATA\r\n")
	c.expect("354")
	c.send("Subject: undeclared 8bit\r\n\r\n" + utf8Body + ".\r\n")
	got := c.reply()
	if !strings.HasPrefix(got, "554 5.6.3") {
		t.Errorf("8-bit DATA without BODY=8BITMIME to a provider without 8BITMIME: %q, want 554 5.6.3", got)
	}
	for _, m := range h.sb.SMTP.Messages() {
		if strings.ContainsFunc(string(m.Data), func(r rune) bool { return r >= 0x80 }) {
			t.Errorf("the provider without 8BITMIME got 8-bit data:\n%q", m.Data)
		}
	}
}

// Verification (passes): the bare-LF dot undo applies to DATA only. A
// BDAT chunk is not dot-stuffed (RFC 3030 §2): "\n..x" must reach the
// provider with both dots.
func TestReviewXBDATKeepsDotsAfterBareLF(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := dialRawX(t, h)
	c.send("MAIL FROM:<" + alice + ">\r\nRCPT TO:<bdat@example.net>\r\n")
	c.expect("250")
	c.expect("250")
	chunk := "Subject: bdat-dots\r\n\r\nline\n..two dots\n.one dot\r\n"
	c.send("BDAT " + itoaX(len(chunk)) + " LAST\r\n" + chunk)
	c.expect("250")
	m := onlyMessage(t, h, "bdat-dots")
	if data := string(m.Data); !strings.Contains(data, "\r\n..two dots\r\n.one dot\r\n") {
		t.Errorf("the provider got %q; BDAT's dots must stay", data)
	}
}

// Verification (passes): no sequence with a bare LF ends DATA early, and
// no second message can be smuggled to the provider behind one.
func TestReviewXNoSmugglingThroughBareLF(t *testing.T) {
	for _, sep := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\n..\n", "\r\n.\r\r\n"} {
		t.Run(strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(sep), func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			c := dialRawX(t, h)
			c.send("MAIL FROM:<" + alice + ">\r\nRCPT TO:<first@example.net>\r\nDATA\r\n")
			c.expect("250")
			c.expect("250")
			c.expect("354")
			c.send("Subject: carrier\r\n\r\nbefore" + sep +
				"MAIL FROM:<" + alice + ">\r\nRCPT TO:<smuggled@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
			c.expect("250")
			c.send("QUIT\r\n")
			c.expect("221")
			msgs := h.sb.SMTP.Messages()
			if len(msgs) != 1 {
				t.Fatalf("the provider got %d messages, want 1", len(msgs))
			}
			if strings.Contains(strings.Join(msgs[0].To, ","), "smuggled") || !strings.Contains(string(msgs[0].Data), "evil") {
				t.Errorf("message at the provider: to %v, data %q", msgs[0].To, msgs[0].Data)
			}
			for _, line := range h.sb.SMTP.Commands("RCPT") {
				if strings.Contains(line, "smuggled") {
					t.Errorf("smuggled command at the provider: %q", line)
				}
			}
		})
	}
}

func itoaX(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// DSN parameters longer than RFC 3461 allows (ENVID 100, ORCPT 500
// characters) are refused at the relay, never passed on to a provider
// that would refuse the MAIL or RCPT line for good.
func TestDSNParametersTooLong(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := dialRawX(t, h)
	c.send("MAIL FROM:<" + alice + "> ENVID=" + strings.Repeat("e", 101) + "\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "501 5.5.4") {
		t.Errorf("MAIL with a 101-character ENVID: %q, want 501 5.5.4", got)
	}
	c.send("MAIL FROM:<" + alice + "> ENVID=" + strings.Repeat("e", 100) + "\r\n")
	c.expect("250")
	c.send("RCPT TO:<r@example.net> ORCPT=rfc822;" + strings.Repeat("o", 495) + "@x.net\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "501 5.5.4") {
		t.Errorf("RCPT with a 508-character ORCPT: %q, want 501 5.5.4", got)
	}
	for _, line := range h.sb.SMTP.Commands("RCPT") {
		if strings.Contains(line, "ORCPT") {
			t.Errorf("the provider got %q", line)
		}
	}
}
