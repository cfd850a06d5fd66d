package server_test

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestPooledConnectionsAreReused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for i := 0; i < 20; i++ {
		h.mustSend(appClient, alice)
	}
	authOK, _, conns := h.sb.SMTP.Counts()
	if conns != 1 || authOK != 1 {
		t.Errorf("20 sequential messages used %d upstream connections and %d AUTHs, want 1 and 1", conns, authOK)
	}
	if n := len(h.sb.SMTP.Messages()); n != 20 {
		t.Errorf("sandbox has %d messages", n)
	}
}

// TestMicrosoftConnectionCap: the provider refuses a 4th concurrent session
// per mailbox (432 4.3.2); the relay never opens one, even with 20 clients
// sending at once as the same mailbox.
func TestMicrosoftConnectionCap(t *testing.T) {
	h := newHarness(t, harnessOptions{providerExtra: "max_connections = 3"})
	h.sb.SMTP.SetMaxSessionsPerUser(3)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for c := 0; c < 20; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := h.send(appClient, alice); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("message failed: %v", err)
	}
	if peak := h.sb.SMTP.PeakSessions(alice); peak > 3 || peak == 0 {
		t.Errorf("peak concurrent upstream sessions = %d, want 1..3", peak)
	}
	if _, failed, _ := h.sb.SMTP.Counts(); failed != 0 {
		t.Errorf("%d upstream AUTHs were refused (432 4.3.2)", failed)
	}
	if n := len(h.sb.SMTP.Messages()); n != 200 {
		t.Errorf("sandbox has %d messages, want 200", n)
	}
}

func TestPoolWaitIsBounded(t *testing.T) {
	h := newHarness(t, harnessOptions{providerExtra: `max_connections = 1
  connection_wait_timeout = "300ms"`})
	holder := dialAuth(t, h, appClient)
	if err := holder.Mail(alice, nil); err != nil { // holds the only connection
		t.Fatal(err)
	}
	start := time.Now()
	_, err := h.send(appClient, alice)
	wantCode(t, err, "451 4.7.0")
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("waited %s for a connection; the wait must be bounded by connection_wait_timeout", waited)
	}
	holder.Reset()
	h.mustSend(appClient, alice) // the connection is free again
}

func TestStaleConnectionIsReplaced(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.mustSend(appClient, alice)
	h.sb.SMTP.CloseAllConnections() // the provider dropped the idle session
	text := h.mustSend(appClient, alice)
	if !strings.Contains(text, "accepted") {
		t.Errorf("reply %q", text)
	}
	if _, _, conns := h.sb.SMTP.Counts(); conns != 2 {
		t.Errorf("upstream connections = %d, want 2 (the stale one replaced)", conns)
	}
	if n := len(h.sb.SMTP.Messages()); n != 2 {
		t.Errorf("sandbox has %d messages, want 2", n)
	}
}

// TestThrottledMailboxOpensOnlyItsCircuit: a mailbox the provider throttles
// (4xx at MAIL) opens its own circuit; the provider's stays closed and its
// other accounts keep sending, even with a tiny minimum volume.
func TestThrottledMailboxOpensOnlyItsCircuit(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true, providerExtra: `circuit_failure_threshold = 2
  circuit_open_timeout = "500ms"
  circuit_min_requests = 2`})
	h.mustSend(appClient, alice)
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "Our system has detected an unusual rate of mail from your account"}
	h.sb.SMTP.FailNextMail(busy, busy)
	for i := 0; i < 2; i++ {
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.7.28")
	}
	mails := h.sb.SMTP.MailCommands()
	_, err := h.send(appClient, alice)
	wantCode(t, err, "451 4.4.1")
	if got := h.sb.SMTP.MailCommands(); got != mails {
		t.Errorf("%d MAIL commands reached the provider while the account's circuit was open", got-mails)
	}
	h.mustSend(appClient, bob) // the provider's circuit stays closed
	h.mustSend(printerClient, carol)
	if v := h.metric(`oauthrelay_circuit_state{name="sandbox",scope="provider"}`); v != 0 {
		t.Errorf("provider circuit state metric = %v, want 0 (closed)", v)
	}
	if v := h.metric(`oauthrelay_circuit_state{name="alice@example.com",scope="account"}`); v != 2 {
		t.Errorf("account circuit state metric = %v, want 2 (open)", v)
	}
	if v := h.metric(`oauthrelay_circuit_rejections_total{scope="account"}`); v != 1 {
		t.Errorf("account circuit rejections = %v, want 1", v)
	}
	time.Sleep(600 * time.Millisecond) // the open timeout, then half-open
	h.mustSend(appClient, alice)       // the probe succeeds and closes the circuit
	if v := h.metric(`oauthrelay_circuit_state{name="alice@example.com",scope="account"}`); v != 0 {
		t.Errorf("account circuit state metric = %v, want 0 (closed)", v)
	}
}

// TestProviderFailingEverythingOpensItsCircuit: when most mailboxes of a
// provider are turned away, or its connections fail, the provider's
// circuit opens and every account is refused at once without traffic.
func TestProviderFailingEverythingOpensItsCircuit(t *testing.T) {
	t.Run("every mailbox refused", func(t *testing.T) {
		h := newHarness(t, harnessOptions{telemetry: true, providerExtra: `circuit_failure_threshold = 100
  circuit_min_requests = 4`})
		busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "System not accepting network messages"}
		h.sb.SMTP.FailNextMail(busy, busy, busy, busy)
		for _, s := range []struct{ client, from string }{{appClient, alice}, {appClient, bob}, {printerClient, carol}, {saClient, dave}} {
			_, err := h.send(s.client, s.from)
			wantCode(t, err, "451 4.3.2")
		}
		mails := h.sb.SMTP.MailCommands()
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.4.1")
		if got := h.sb.SMTP.MailCommands(); got != mails {
			t.Errorf("%d MAIL commands reached the provider while its circuit was open", got-mails)
		}
		if v := h.metric(`oauthrelay_circuit_state{name="sandbox",scope="provider"}`); v != 2 {
			t.Errorf("provider circuit state metric = %v, want 2 (open)", v)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		h := newHarness(t, harnessOptions{telemetry: true, smtpAddress: testutil.FreeAddr(t), providerExtra: `circuit_failure_threshold = 100
  circuit_min_requests = 3`})
		for _, s := range []struct{ client, from string }{{appClient, alice}, {appClient, bob}, {printerClient, carol}} {
			_, err := h.send(s.client, s.from)
			wantCode(t, err, "451 4.4.1")
		}
		if v := h.metric(`oauthrelay_circuit_state{name="sandbox",scope="provider"}`); v != 2 {
			t.Errorf("provider circuit state metric = %v, want 2 (open)", v)
		}
		if v := h.metric(`oauthrelay_circuit_rejections_total{scope="provider"}`); v > 0 {
			t.Errorf("provider circuit rejections = %v before any refused message", v)
		}
		_, err := h.send(saClient, dave)
		wantCode(t, err, "451 4.4.1")
		if v := h.metric(`oauthrelay_circuit_rejections_total{scope="provider"}`); v != 1 {
			t.Errorf("provider circuit rejections = %v, want 1", v)
		}
	})
}

// TestTransientDataFailuresAreRetriedOnce: with one message in seven
// refused 451 4.3.0 at DATA, the relay tries each refused message once more
// on another connection: at least 95% of the messages get 250, every
// delivered message arrives once, and no circuit opens.
func TestTransientDataFailuresAreRetriedOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true})
	h.sb.SMTP.FailEveryNthData(7, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mail server temporarily rejected message."})
	const n = 700
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for w := 0; w < 7; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/7; i++ {
				if _, err := h.send(appClient, alice); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ok < n*95/100 {
		t.Errorf("%d of %d messages got 250, want at least 95%%", ok, n)
	}
	if got := len(h.sb.SMTP.Messages()); got != ok {
		t.Errorf("the provider holds %d messages, the clients got %d 250s", got, ok)
	}
	if v := h.metric(`oauthrelay_circuit_state{name="sandbox",scope="provider"}`); v != 0 {
		t.Errorf("provider circuit opened: %v", v)
	}
	if v := h.metric(`oauthrelay_circuit_state{name="alice@example.com",scope="account"}`); v != 0 {
		t.Errorf("account circuit opened: %v", v)
	}
}

func TestRecipientRejectionsDoNotOpenTheCircuit(t *testing.T) {
	h := newHarness(t, harnessOptions{providerExtra: "circuit_failure_threshold = 2"})
	h.sb.SMTP.SetRcptReply("gone@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	for i := 0; i < 4; i++ {
		_, err := h.send(appClient, alice, "gone@example.net")
		wantCode(t, err, "550 5.1.1")
	}
	h.mustSend(appClient, alice)
}

func TestAccountLimits(t *testing.T) {
	t.Run("rate per minute", func(t *testing.T) {
		h := newHarness(t, harnessOptions{telemetry: true, aliceExtra: "rate_limit_per_minute = 2"})
		h.mustSend(appClient, alice)
		h.mustSend(appClient, alice)
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.7.0")
		h.mustSend(appClient, bob) // other accounts are not limited
		if v := h.metric(`oauthrelay_limit_rejections_total{account="alice@example.com",limit="rate_per_minute"}`); v != 1 {
			t.Errorf("limit rejections = %v", v)
		}
	})
	t.Run("daily messages", func(t *testing.T) {
		h := newHarness(t, harnessOptions{telemetry: true, aliceExtra: "daily_message_limit = 2"})
		h.mustSend(appClient, alice)
		h.mustSend(appClient, alice)
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.7.0")
		if v := h.metric(`oauthrelay_quota_usage_ratio{account="alice@example.com",quota="daily_messages"}`); v != 1 {
			t.Errorf("quota usage = %v, want 1", v)
		}
	})
	t.Run("recipients per message", func(t *testing.T) {
		h := newHarness(t, harnessOptions{aliceExtra: "max_recipients_per_message = 2"})
		_, err := h.send(appClient, alice, "1@x.net", "2@x.net", "3@x.net")
		wantCode(t, err, "452 4.5.3")
		h.mustSend(appClient, alice, "1@x.net", "2@x.net")
	})
	t.Run("daily recipients", func(t *testing.T) {
		h := newHarness(t, harnessOptions{aliceExtra: "daily_recipient_limit = 3"})
		h.mustSend(appClient, alice, "1@x.net", "2@x.net")
		c := dialAuth(t, h, appClient)
		if err := c.Mail(alice, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("3@x.net", nil); err != nil {
			t.Fatal(err)
		}
		wantCode(t, c.Rcpt("4@x.net", nil), "452 4.5.3")
	})
	t.Run("a refused message gives its share back", func(t *testing.T) {
		// Reservations: the message the provider refused does not count
		// against the daily quota of one, so the next one goes out.
		h := newHarness(t, harnessOptions{aliceExtra: "daily_message_limit = 1\n  daily_recipient_limit = 1"})
		h.sb.SMTP.FailNextData(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam."})
		_, err := h.send(appClient, alice)
		wantCode(t, err, "550 5.7.1")
		h.mustSend(appClient, alice)
		_, err = h.send(appClient, alice)
		wantCode(t, err, "451 4.7.0")
	})
	t.Run("limits survive a reload", func(t *testing.T) {
		h := newHarness(t, harnessOptions{aliceExtra: "daily_message_limit = 1"})
		h.mustSend(appClient, alice)
		if err := h.rt.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, err := h.send(appClient, alice)
		wantCode(t, err, "451 4.7.0")
	})
}

func TestPerAddressLimits(t *testing.T) {
	t.Run("connections per address", func(t *testing.T) {
		h := newHarness(t, harnessOptions{listenerExtra: "max_connections_per_ip = 2"})
		dialAuth(t, h, appClient)
		dialAuth(t, h, appClient)
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.HasPrefix(line, "421 4.7.0") {
			t.Errorf("third connection got %q, want 421 4.7.0", line)
		}
	})
	t.Run("AUTH failures", func(t *testing.T) {
		h := newHarness(t, harnessOptions{listenerExtra: "max_auth_failures = 3"})
		for i := 0; i < 3; i++ {
			_, err := testutil.Send(h.addr, testutil.Mail{User: appClient, Password: "guess", From: alice, To: []string{"x@example.net"}})
			wantCode(t, err, "535 5.7.8")
		}
		// Even the right password is refused for a while now.
		_, err := h.send(appClient, alice)
		wantCode(t, err, "454 4.7.0")
	})
}

// TestSeveralStaleConnections: after the provider dropped every idle
// session of a pool, the next message still goes through, however many
// stale connections it meets first.
func TestSeveralStaleConnections(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	var clients []*smtp.Client
	for i := 0; i < 5; i++ { // five transactions at once: five pooled connections
		c := dialAuth(t, h, appClient)
		if err := c.Mail(alice, nil); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, conns := h.sb.SMTP.Counts(); conns != 5 {
		t.Fatalf("upstream connections = %d, want 5", conns)
	}
	h.sb.SMTP.CloseAllConnections()
	h.mustSend(appClient, alice)
	if n := len(h.sb.SMTP.Messages()); n != 1 {
		t.Errorf("sandbox has %d messages, want 1", n)
	}
}
