package server_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// rawConn speaks SMTP line by line, for what a library client will not
// send (control characters, nested MAIL, BDAT then RSET).
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("220")
	return rc
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (rc *rawConn) reply() string {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			return "EOF: " + err.Error()
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (rc *rawConn) send(line string) string {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(line + "\r\n")); err != nil {
		rc.t.Fatal(err)
	}
	return rc.reply()
}

func (rc *rawConn) expect(prefix string) string {
	rc.t.Helper()
	got := rc.reply()
	if !strings.HasPrefix(got, prefix) {
		rc.t.Fatalf("reply %q, want %s", got, prefix)
	}
	return got
}

func (rc *rawConn) must(line, prefix string) string {
	rc.t.Helper()
	got := rc.send(line)
	if !strings.HasPrefix(got, prefix) {
		rc.t.Fatalf("%q: reply %q, want %s", line, got, prefix)
	}
	return got
}

// data sends a small message with the given subject and expects 250.
func (rc *rawConn) data(subject string) {
	rc.t.Helper()
	rc.must("DATA", "354")
	rc.c.Write([]byte("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n"))
	rc.expect("250")
}

func (h *harness) rawAuth(client string) *rawConn {
	h.t.Helper()
	rc := dialRaw(h.t, h.addr)
	rc.must("EHLO client.test", "250")
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + client + "\x00" + h.password))
	rc.must("AUTH PLAIN "+ir, "235")
	return rc
}

// TestControlCharactersInAddresses: CR, LF, NUL and other control
// characters inside an address get 501, are never trimmed into a valid
// address, never reach the provider, and — sent again and again — do not
// open any circuit.
func TestControlCharactersInAddresses(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true, providerExtra: `circuit_min_requests = 2
  circuit_failure_threshold = 2`})
	rc := h.rawAuth(appClient)
	for i := 0; i < 6; i++ {
		rc.must("MAIL FROM:<alice@example.com\r>", "501 5.1.7")
		rc.must("MAIL FROM:<alice@example.com\x00>", "501 5.1.7")
		rc.must("MAIL FROM:<alice@exa\x01mple.com>", "501 5.1.7")
	}
	rc.must("MAIL FROM:<alice@example.com>", "250")
	rc.must("RCPT TO:<x@example.net\x00>", "501 5.1.3")
	rc.must("RCPT TO:<\"x\ty\"@example.net>", "501 5.1.3")
	rc.must("RSET", "250")
	if got := h.sb.SMTP.Commands("MAIL"); len(got) != 1 {
		t.Errorf("MAIL commands at the provider: %q, want only the valid one", got)
	}
	h.mustSend(appClient, alice)
	h.mustSend(appClient, bob)
	for _, c := range []string{`name="sandbox",scope="provider"`, `name="alice@example.com",scope="account"`} {
		if v := h.metric("oauthrelay_circuit_state{" + c + "}"); v != 0 {
			t.Errorf("circuit %s = %v, want 0 (closed)", c, v)
		}
	}
}

// TestHalfOpenProbeIsNotHeldByAnIdleClient: after a circuit's timeout, a
// client that sends MAIL and then idles does not keep everyone else out.
func TestHalfOpenProbeIsNotHeldByAnIdleClient(t *testing.T) {
	h := newHarness(t, harnessOptions{providerExtra: `circuit_failure_threshold = 1
  circuit_open_timeout = "300ms"`})
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "slow down"}
	h.sb.SMTP.FailNextMail(busy)
	_, err := h.send(appClient, alice)
	wantCode(t, err, "451 4.7.28")
	_, err = h.send(appClient, alice)
	wantCode(t, err, "451 4.4.1")
	time.Sleep(400 * time.Millisecond) // the open timeout: half-open now
	idle := dialAuth(t, h, appClient)
	if err := idle.Mail(alice, nil); err != nil { // takes the probe, then idles
		t.Fatal(err)
	}
	h.mustSend(appClient, alice)
	h.mustSend(appClient, alice)
}

// TestQuotedLocalParts: a quoted local part reaches the provider quoted,
// so that it stays one mailbox and cannot smuggle parameters; a legitimate
// quoted local part is relayed.
func TestQuotedLocalParts(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	smuggle := `"victim@example.net> NOTIFY=SUCCESS ORCPT=rfc822;x"@evil.test`
	for _, rcpt := range []string{smuggle, `"john doe"@example.net`, `"a\"b\\c"@example.net`} {
		if _, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{rcptForClient(rcpt)}}); err != nil {
			t.Fatalf("%s: %v", rcpt, err)
		}
	}
	got := h.sb.SMTP.Commands("RCPT")
	want := []string{
		`RCPT TO:<"victim@example.net> NOTIFY=SUCCESS ORCPT=rfc822;x"@evil.test>`,
		`RCPT TO:<"john doe"@example.net>`,
		`RCPT TO:<"a\"b\\c"@example.net>`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("RCPT commands at the provider:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	msgs := h.sb.SMTP.Messages()
	if len(msgs) != 3 || len(msgs[0].To) != 1 || msgs[0].To[0] != "victim@example.net> NOTIFY=SUCCESS ORCPT=rfc822;x@evil.test" {
		t.Errorf("the provider saw recipients %+v", msgs)
	}
}

// rcptForClient is what go-smtp's client sends: it writes the address
// between angle brackets as given, so a quoted local part goes out quoted.
func rcptForClient(a string) string { return a }

// TestLongLines: message lines far beyond RFC 5322's 998 characters (HTML
// without line breaks) are relayed byte for byte; a line beyond the
// listener's max_line_length gets a permanent 554 5.6.0, logged and
// counted.
func TestLongLines(t *testing.T) {
	t.Run("within the limit", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		line := strings.Repeat("<td>x</td>", 6000) // 60,000 bytes, one line
		body := "Subject: html\r\n\r\n" + line + "\r\n"
		h.mustSendBody(body)
		msgs := h.sb.SMTP.Messages()
		if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Data), body) {
			t.Fatalf("the long line did not arrive intact")
		}
	})
	t.Run("beyond the limit", func(t *testing.T) {
		h := newHarness(t, harnessOptions{telemetry: true, listenerExtra: "max_connections_per_ip = 0\n  max_line_length = \"8KiB\""})
		body := "Subject: html\r\n\r\n" + strings.Repeat("y", 10_000) + "\r\n"
		_, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{"x@example.net"}, Body: body})
		wantCode(t, err, "554 5.6.0")
		if n := len(h.sb.SMTP.Messages()); n != 0 {
			t.Errorf("the provider got %d messages", n)
		}
		if v := h.metric(`oauthrelay_messages_refused_total{listener="test",reason="line_too_long"}`); v != 1 {
			t.Errorf("refused metric = %v, want 1", v)
		}
		if !strings.Contains(h.logs.String(), "longer than the listener's max_line_length") {
			t.Error("the refusal is not logged")
		}
		h.mustSend(appClient, alice) // the listener serves the next client
	})
}

func (h *harness) mustSendBody(body string) {
	h.t.Helper()
	if _, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{"x@example.net"}, Body: body}); err != nil {
		h.t.Fatal(err)
	}
}

// TestSessionSequence: a second MAIL inside a transaction is a sequence
// error (503), not a provider failure; RSET upstream keeps the session's
// EHLO; the first EHLO (before STARTTLS) uses the configured hostname.
func TestSessionSequence(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rc := h.rawAuth(appClient)
	rc.must("MAIL FROM:<alice@example.com>", "250")
	rc.must("RCPT TO:<x@example.net>", "250")
	rc.must("MAIL FROM:<alice@example.com>", "503 5.5.1")
	rc.data("one")
	rc.must("MAIL FROM:<alice@example.com>", "250")
	rc.must("RSET", "250")
	rc.must("MAIL FROM:<alice@example.com>", "250")
	rc.must("RCPT TO:<y@example.net>", "250")
	rc.data("two")
	rc.must("QUIT", "221")
	ehlos := h.sb.SMTP.Commands("EHLO", "HELO")
	if len(ehlos) != 2 || ehlos[0] != "EHLO relay.test" || ehlos[1] != "EHLO relay.test" {
		t.Errorf("EHLO commands at the provider: %q, want the configured name before and after STARTTLS, and none after RSET", ehlos)
	}
	if got := h.sb.SMTP.Commands("RSET"); len(got) != 1 {
		t.Errorf("RSET commands at the provider: %q", got)
	}
	if n := len(h.sb.SMTP.Messages()); n != 2 {
		t.Errorf("the provider got %d messages, want 2", n)
	}
}

// TestReceivedHeader: the relay adds a Received trace header (RFC 5321
// §4.4) naming the client's EHLO and address, itself and the message ID,
// without credentials; received_hide_client leaves the address out.
func TestReceivedHeader(t *testing.T) {
	for _, hide := range []bool{false, true} {
		t.Run(fmt.Sprint("hide=", hide), func(t *testing.T) {
			extra := ""
			if hide {
				extra = "received_hide_client = true"
			}
			h := newHarness(t, harnessOptions{serverExtra: extra})
			text := h.mustSend(appClient, alice)
			data := string(h.sb.SMTP.Messages()[0].Data)
			first, _, _ := strings.Cut(data, "\r\n\t")
			from := "Received: from client.test ([127.0.0.1])"
			if hide {
				from = "Received: from client.test"
			}
			if first != from {
				t.Errorf("first header line %q, want %q", first, from)
			}
			_, rest, _ := strings.Cut(text, "message ")
			id, _, _ := strings.Cut(rest, " ") // "2.0.0 OK: message <id> accepted …"
			if !strings.Contains(data, "\r\n\tby relay.test (oauthrelay) with ESMTPA id "+id+";\r\n\t") {
				t.Errorf("reply %q; message:\n%s", text, data)
			}
			if strings.Contains(data, h.password) || strings.Contains(data, appClient+")") {
				t.Error("the Received header names the client's credentials")
			}
		})
	}
}

// TestUntrustedCertificateIsNotRetried: no retry can fix a certificate the
// relay does not trust; it is tried once per message.
func TestUntrustedCertificateIsNotRetried(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true, providerExtra: `tls_server_name = "wrong.example"`})
	_, err := h.send(appClient, alice)
	wantCode(t, err, "451 4.4.1")
	if v := h.metric(`oauthrelay_upstream_dials_total{provider="sandbox",result="connect_error"}`); v != 1 {
		t.Errorf("connection attempts = %v, want 1", v)
	}
	if !strings.Contains(h.logs.String(), "certificate is not trusted") {
		t.Error("the log does not say the certificate is not trusted")
	}
}

// TestAuthThrottle: parallel wrong guesses are counted while they are
// verified, so no more than max_auth_failures are verified; a success
// from the same address does not clear the failures.
func TestAuthThrottle(t *testing.T) {
	h := newHarness(t, harnessOptions{listenerExtra: "max_connections_per_ip = 0\n  max_auth_failures = 5"})
	h.mustSend(appClient, alice) // a valid login first
	var wg sync.WaitGroup
	codes := make(chan string, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := testutil.Send(h.addr, testutil.Mail{User: restrictedClient, Password: "guess", From: alice, To: []string{"x@example.net"}})
			codes <- testutil.Code(err)
		}()
	}
	wg.Wait()
	close(codes)
	count := map[string]int{}
	for c := range codes {
		count[c]++
	}
	if count["535 5.7.8"] > 5 || count["535 5.7.8"]+count["454 4.7.0"] != 40 {
		t.Errorf("replies to 40 parallel wrong guesses: %v, want at most 5 verified (535) and the rest 454", count)
	}
	// The right password of another client does not reset the count.
	_, err := h.send(appClient, alice)
	wantCode(t, err, "454 4.7.0")
}

// TestBDATAbortedByRSET exercises go-smtp's BDAT goroutine against RSET
// and a new transfer (run with -race).
func TestBDATAbortedByRSET(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rc := h.rawAuth(appClient)
	for i := 0; i < 3; i++ {
		rc.must("MAIL FROM:<alice@example.com>", "250")
		rc.must("RCPT TO:<x@example.net>", "250")
		rc.c.Write([]byte("BDAT 10\r\nSubject: x"))
		rc.expect("250")
		rc.must("RSET", "250")
	}
	rc.must("MAIL FROM:<alice@example.com>", "250")
	rc.must("RCPT TO:<x@example.net>", "250")
	msg := "Subject: chunked\r\n\r\nbody\r\n"
	rc.c.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg)))
	rc.expect("250")
	msgs := h.sb.SMTP.Messages()
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Data), msg) {
		t.Fatalf("the provider got %d messages", len(msgs))
	}
}

// TestShutdownWaitsForEarlierGenerations: SIGTERM after a reload lets a
// session of the earlier configuration finish its DATA.
func TestShutdownWaitsForEarlierGenerations(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c, w := inflightData(t, h, "across a reload")
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := shutdownAsync(t, h)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a session of the earlier generation was in DATA", err)
	case <-time.After(300 * time.Millisecond):
	}
	finishInflight(t, c, w, done)
	if n := len(h.sb.SMTP.Messages()); n != 1 {
		t.Errorf("the provider got %d messages, want 1", n)
	}
}

// TestRetiredSessionsHaveABoundedLife: after a reload, idle sessions of the
// earlier configuration are closed once retired_session_timeout passed; a
// session in a transaction finishes it first.
func TestRetiredSessionsHaveABoundedLife(t *testing.T) {
	h := newHarness(t, harnessOptions{serverExtra: `retired_session_timeout = "200ms"`})
	idle := h.rawAuth(appClient)
	busy := h.rawAuth(appClient)
	busy.must("MAIL FROM:<alice@example.com>", "250")
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := idle.reply(); !strings.HasPrefix(got, "421") {
		t.Errorf("idle session of the earlier generation: %q, want 421 then close", got)
	}
	time.Sleep(1500 * time.Millisecond) // past the timeout and a sweep
	busy.must("RCPT TO:<x@example.net>", "250")
	busy.data("late")
	busy.must("MAIL FROM:<alice@example.com>", "421 4.3.2")
	if got := busy.reply(); !strings.HasPrefix(got, "EOF") {
		t.Errorf("after 421 the connection stays open: %q", got)
	}
}

// TestMemoryBudgetWithoutSpilling: with spill_to_disk = false, a message
// that does not fit in message_memory_limit is refused for now with
// 452 4.3.1 (never 250, never a permanent error), logged and counted.
func TestMemoryBudgetWithoutSpilling(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true, serverExtra: "message_memory_limit = \"1KiB\"\n  spill_to_disk = false"})
	_, err := h.send(appClient, alice)
	wantCode(t, err, "452 4.3.1")
	if v := h.metric(`oauthrelay_messages_refused_total{listener="test",reason="storage_full"}`); v != 1 {
		t.Errorf("refused metric = %v, want 1", v)
	}
	if v := h.metric("oauthrelay_message_memory_bytes"); v != 0 {
		t.Errorf("message memory after the refusal = %v, want 0", v)
	}
	if n := len(h.sb.SMTP.Messages()); n != 0 {
		t.Errorf("the provider got %d messages", n)
	}
}
