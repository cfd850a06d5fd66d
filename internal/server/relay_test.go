package server_test

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestHappyPathEachFlow(t *testing.T) {
	tests := []struct {
		name, client, from string
		style              devsandbox.Style
		mechanism          string
		tokenSubject       string
	}{
		{"refresh_token/google/xoauth2", appClient, alice, devsandbox.StyleGoogle, "XOAUTH2", alice},
		{"refresh_token/oauthbearer", appClient, bob, devsandbox.StyleGoogle, "OAUTHBEARER", bob},
		{"client_credentials/microsoft", printerClient, carol, devsandbox.StyleMicrosoft, "XOAUTH2", appOnlyClientID},
		{"service_account/google", saClient, dave, devsandbox.StyleGoogle, "XOAUTH2", dave},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{style: tc.style, mechanism: tc.mechanism})
			text := h.mustSend(tc.client, tc.from, "one@example.net", "two@example.net")
			if !strings.Contains(text, "accepted by the provider") {
				t.Errorf("250 text = %q", text)
			}
			msgs := h.sb.SMTP.Messages()
			if len(msgs) != 1 {
				t.Fatalf("sandbox received %d messages, want 1", len(msgs))
			}
			m := msgs[0]
			if m.User != tc.from || m.From != tc.from || strings.Join(m.To, ",") != "one@example.net,two@example.net" {
				t.Errorf("sandbox got user=%s from=%s to=%v", m.User, m.From, m.To)
			}
			if !strings.Contains(string(m.Data), "hello") {
				t.Errorf("body lost: %q", m.Data)
			}
			// A second message reuses the cached access token.
			h.mustSend(tc.client, tc.from)
			if got := h.sb.Tokens.Requests(tc.tokenSubject); got != 1 {
				t.Errorf("token requests for %s = %d, want 1", tc.tokenSubject, got)
			}
		})
	}
}

func TestLocalPolicyReplies(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	t.Run("wrong password", func(t *testing.T) {
		_, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: "wrong", From: alice, To: []string{"x@example.net"}})
		wantCode(t, err, "535 5.7.8")
	})
	t.Run("unknown user", func(t *testing.T) {
		_, err := testutil.Send(h.addr, testutil.Mail{User: "nobody", Password: h.password, From: alice, To: []string{"x@example.net"}})
		wantCode(t, err, "535 5.7.8")
	})
	t.Run("MAIL without AUTH", func(t *testing.T) {
		_, err := testutil.Send(h.addr, testutil.Mail{From: alice, To: []string{"x@example.net"}})
		wantCode(t, err, "530 5.7.0")
	})
	t.Run("sender not allowed for client", func(t *testing.T) {
		_, err := h.send(restrictedClient, bob)
		wantCode(t, err, "550 5.7.1")
	})
	t.Run("sender of another group", func(t *testing.T) {
		_, err := h.send(appClient, carol)
		wantCode(t, err, "550 5.7.1")
	})
	t.Run("null sender", func(t *testing.T) {
		_, err := h.send(appClient, "")
		wantCode(t, err, "550 5.7.1")
	})
	t.Run("sender case-insensitive", func(t *testing.T) {
		if _, err := h.send(restrictedClient, "Alice@Example.COM"); err != nil {
			t.Fatal(err)
		}
	})
	if n := len(h.sb.SMTP.Messages()); n != 1 {
		t.Errorf("sandbox received %d messages, want only the allowed one", n)
	}
}

func TestSizeAndRecipientLimits(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	t.Run("SIZE parameter over the limit", func(t *testing.T) {
		c := dialAuth(t, h, appClient)
		err := c.Mail(alice, &smtp.MailOptions{Size: 100_000})
		wantCode(t, err, "552 5.3.4")
	})
	t.Run("message over the limit", func(t *testing.T) {
		body := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 5000)
		_, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{"x@example.net"}, Body: body})
		wantCode(t, err, "552 5.3.4")
	})
	t.Run("too many recipients", func(t *testing.T) {
		rcpts := []string{"1@x.net", "2@x.net", "3@x.net", "4@x.net", "5@x.net", "6@x.net"}
		_, err := h.send(appClient, alice, rcpts...)
		wantCode(t, err, "452 4.5.3")
	})
	t.Run("EHLO advertises SIZE", func(t *testing.T) {
		c := dialAuth(t, h, appClient)
		if ok, v := c.Extension("SIZE"); !ok || v != "64000" {
			t.Errorf("SIZE = %v %q, want 64000", ok, v)
		}
	})
	if n := len(h.sb.SMTP.Messages()); n != 0 {
		t.Errorf("sandbox received %d messages, want 0", n)
	}
}

func dialAuth(t *testing.T, h *harness, client string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(saslPlain(client, h.password)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestUpstreamRepliesPassThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sb.SMTP.SetRcptReply("gone@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "The email account that you tried to reach does not exist."})
	h.sb.SMTP.SetRcptReply("full@example.net", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "The email account that you tried to reach is over quota."})

	t.Run("RCPT 550 5.1.1", func(t *testing.T) {
		_, err := h.send(appClient, alice, "gone@example.net")
		wantCode(t, err, "550 5.1.1")
		if !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("provider text lost: %v", err)
		}
	})
	t.Run("RCPT 452 4.2.2", func(t *testing.T) {
		_, err := h.send(appClient, alice, "full@example.net")
		wantCode(t, err, "452 4.2.2")
	})
	t.Run("DATA 451 twice", func(t *testing.T) {
		// A temporary refusal is tried once more; a second one reaches the
		// client as the provider said it.
		r := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mail server temporarily rejected message."}
		h.sb.SMTP.FailNextData(r, r)
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.3.0")
	})
	t.Run("DATA 550", func(t *testing.T) {
		h.sb.SMTP.FailNextData(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam."})
		_, err := h.send(appClient, alice)
		wantCode(t, err, "550 5.7.1")
	})
	t.Run("MAIL 421 is retried on a new connection", func(t *testing.T) {
		before := len(h.sb.SMTP.Messages())
		h.sb.SMTP.FailNextMail(&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Try again later, closing connection."})
		h.mustSend(appClient, alice)
		if n := len(h.sb.SMTP.Messages()); n != before+1 {
			t.Errorf("sandbox has %d new messages, want 1", n-before)
		}
	})
	t.Run("MAIL 421 on every attempt becomes 451", func(t *testing.T) {
		r := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Try again later, closing connection."}
		h.sb.SMTP.FailNextMail(r, r, r)
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.7.0")
	})
	t.Run("one good recipient of two", func(t *testing.T) {
		c := dialAuth(t, h, appClient)
		if err := c.Mail(alice, nil); err != nil {
			t.Fatal(err)
		}
		wantCode(t, c.Rcpt("gone@example.net", nil), "550 5.1.1")
		if err := c.Rcpt("ok@example.net", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("Subject: partial\r\n\r\nbody\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		msgs := h.sb.SMTP.Messages()
		if last := msgs[len(msgs)-1]; strings.Join(last.To, ",") != "ok@example.net" {
			t.Fatalf("last sandbox message went to %v, want ok@example.net only", last.To)
		}
	})
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	h := newHarness(t, harnessOptions{smtpAddress: closed})
	_, err = h.send(appClient, alice)
	wantCode(t, err, "451 4.4.1")
}

func TestInvalidGrantIsRememberedAndReported(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sb.Tokens.RevokeRefreshToken(h.rts[alice])
	for i := 0; i < 5; i++ {
		_, err := h.send(appClient, alice)
		wantCode(t, err, "454 4.7.0")
	}
	if got := h.sb.Tokens.Requests(alice); got != 1 {
		t.Errorf("token requests for the revoked account = %d, want 1 (the failure must be remembered)", got)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "invalid_grant") || !strings.Contains(logs, "re-authorise") {
		t.Errorf("logs do not explain the invalid_grant:\n%s", logs)
	}
	// Other accounts are unaffected.
	h.mustSend(appClient, bob)
}

func TestRejectedTokenIsRefreshedOnce(t *testing.T) {
	for _, style := range []devsandbox.Style{devsandbox.StyleGoogle, devsandbox.StyleMicrosoft} {
		// One message per connection, so that the second message
		// authenticates again instead of reusing the pooled session.
		h := newHarness(t, harnessOptions{style: style, providerExtra: "max_messages_per_connection = 1"})
		h.mustSend(appClient, alice)
		// The provider forgets the token before its expiry: 535, then the
		// relay refreshes once and succeeds.
		h.sb.Tokens.RevokeAccessTokens()
		h.mustSend(appClient, alice)
		if got := h.sb.Tokens.Requests(alice); got != 2 {
			t.Errorf("style %d: token requests = %d, want 2", style, got)
		}
		if _, failed, _ := h.sb.SMTP.Counts(); failed != 1 {
			t.Errorf("style %d: upstream auth failures = %d, want 1", style, failed)
		}
		if n := len(h.sb.SMTP.Messages()); n != 2 {
			t.Errorf("style %d: sandbox has %d messages, want 2", style, n)
		}
	}
}

func TestPersistentUpstreamAuthFailure(t *testing.T) {
	h := newHarness(t, harnessOptions{style: devsandbox.StyleMicrosoft})
	h.sb.SMTP.DisableSMTPAuth(alice)
	_, err := h.send(appClient, alice)
	wantCode(t, err, "454 4.7.0")
	if got := h.sb.Tokens.Requests(alice); got != 1 {
		t.Errorf("token requests = %d, want 1: refreshing cannot fix 5.7.139", got)
	}
	if !strings.Contains(h.logs.String(), "SmtpClientAuthenticationDisabled") {
		t.Errorf("logs lack the 5.7.139 advice")
	}
}

func TestExpiredAccessTokenIsRefreshed(t *testing.T) {
	// A connection per message, so that every message needs a valid token.
	h := newHarness(t, harnessOptions{tokenTTL: 2 * time.Second, providerExtra: "max_messages_per_connection = 1"})
	h.mustSend(appClient, alice)
	// Tokens live 2s and are replaced half-way; keep sending until the
	// relay had to fetch a second one, with no failure on the way.
	deadline := time.Now().Add(15 * time.Second)
	for h.sb.Tokens.Requests(alice) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the access token was never refreshed")
		}
		h.mustSend(appClient, alice)
		time.Sleep(100 * time.Millisecond) // pacing, not synchronisation
	}
	if _, failed, _ := h.sb.SMTP.Counts(); failed != 0 {
		t.Errorf("upstream saw %d authentication failures; the token must be refreshed before it expires", failed)
	}
}

func TestDryRun(t *testing.T) {
	h := newHarness(t, harnessOptions{dryRun: true})
	text := h.mustSend(appClient, alice)
	if !strings.Contains(text, "dry run") {
		t.Errorf("250 text = %q, want it to say dry run", text)
	}
	if n := len(h.sb.SMTP.Messages()); n != 0 {
		t.Errorf("dry run delivered %d messages", n)
	}
	if ok, _, _ := h.sb.SMTP.Counts(); ok != 1 {
		t.Errorf("dry run authenticated upstream %d times, want 1", ok)
	}
	if !strings.Contains(h.logs.String(), "DRY RUN") {
		t.Error("dry run is not logged loudly")
	}
}

func TestConnectionLostAfterDataIsNotA250(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.sb.SMTP.DropAfterNextData(1)
	_, err := h.send(appClient, alice)
	wantCode(t, err, "451 4.4.2")
	if !strings.Contains(h.logs.String(), "delivery state unknown") {
		t.Error("the ambiguity is not logged")
	}
}

// TestThousandConcurrentFirstMessages checks that simultaneous first
// messages for one account share a single token request.
func TestThousandConcurrentFirstMessages(t *testing.T) {
	const n = 1000
	h := newHarness(t, harnessOptions{})
	h.sb.Tokens.SetDelay(300 * time.Millisecond) // keep the refresh in flight while the rest arrive
	clients := make([]*smtp.Client, n)
	for i := range clients {
		clients[i] = dialAuth(t, h, appClient)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, c := range clients {
		wg.Add(1)
		go func(c *smtp.Client) {
			defer wg.Done()
			<-start
			if err := c.Mail(alice, nil); err != nil {
				errs <- err
				return
			}
			if err := c.Rcpt("x@example.net", nil); err != nil {
				errs <- err
				return
			}
			w, err := c.Data()
			if err != nil {
				errs <- err
				return
			}
			w.Write([]byte("Subject: burst\r\n\r\nhi\r\n"))
			if err := w.Close(); err != nil {
				errs <- err
			}
		}(c)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("message failed: %v", err)
	}
	if got := h.sb.Tokens.Requests(alice); got != 1 {
		t.Errorf("token requests = %d, want exactly 1", got)
	}
	if got := len(h.sb.SMTP.Messages()); got != n {
		t.Errorf("sandbox received %d messages, want %d", got, n)
	}
}

// TestNoLossNoPhantom sends concurrently through injected upstream faults
// and checks that the provider holds exactly the messages that got 250.
func TestNoLossNoPhantom(t *testing.T) {
	// The breaker would (rightly) stop traffic after the injected run of
	// failures; this test is about loss, so keep it closed.
	h := newHarness(t, harnessOptions{providerExtra: "circuit_failure_threshold = 1000"})
	tempFail := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary"}
	for i := 0; i < 10; i++ {
		h.sb.SMTP.FailNextData(tempFail)
	}
	h.sb.SMTP.DropAfterNextData(5)
	h.sb.SMTP.FailNextMail(tempFail, tempFail, tempFail)
	h.sb.Tokens.FailNext(2, 503) // retried by the token client

	const senders, each = 8, 15
	var mu sync.Mutex
	accepted := map[string]bool{}
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				subject := "m-" + strconv.Itoa(s) + "-" + strconv.Itoa(i)
				_, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: alice, To: []string{"x@example.net"}, Body: "Subject: " + subject + "\r\n\r\nbody\r\n"})
				if err == nil {
					mu.Lock()
					accepted[subject] = true
					mu.Unlock()
				} else if c := testutil.Code(err); c == "" || c[0] != '4' {
					t.Errorf("unexpected failure: %v", err)
				}
			}
		}(s)
	}
	wg.Wait()
	got := map[string]bool{}
	for _, m := range h.sb.SMTP.Messages() {
		if got[m.Subject] {
			t.Errorf("message %s delivered twice", m.Subject)
		}
		got[m.Subject] = true
	}
	for s := range accepted {
		if !got[s] {
			t.Errorf("message %s got 250 but never reached the provider", s)
		}
	}
	for s := range got {
		if !accepted[s] {
			t.Errorf("message %s reached the provider but the client did not get 250", s)
		}
	}
	if len(accepted) == 0 || len(accepted) == senders*each {
		t.Errorf("accepted %d of %d: the injected faults did not take effect", len(accepted), senders*each)
	}
}

func saslPlain(user, password string) sasl.Client { return sasl.NewPlainClient("", user, password) }

func TestGlobalConcurrency(t *testing.T) {
	h := newHarness(t, harnessOptions{serverExtra: "global_concurrency = 1"})
	held := dialAuth(t, h, appClient)
	c, err := smtp.Dial(h.addr)
	if err == nil {
		err = c.Hello("second.test")
		c.Close()
	}
	wantCode(t, err, "421 4.3.2")
	held.Quit()
	// The slot is free again once the first session ended.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := h.send(appClient, alice); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("slot never freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the server closes the first connection asynchronously
	}
}
