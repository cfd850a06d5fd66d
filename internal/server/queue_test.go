package server_test

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// queueingHarness runs the harness relay with its listener in queue mode, a
// store in the test's directory and a one-second retry schedule.
func queueingHarness(t *testing.T, o harnessOptions) (*harness, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	o.listenerExtra += "\n  delivery = \"queue\""
	o.extraConfig += fmt.Sprintf("\nstore {\n  path = %q\n}\nqueue {\n  retry_schedule = [\"1s\"]\n  max_lifetime = \"1h\"\n}\n", dir)
	return newHarness(t, o), dir
}

// await polls cond until it holds or the deadline passes.
func await(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// delivered counts the sandbox's messages whose subject is subject.
func delivered(h *harness, subject string) int {
	n := 0
	for _, m := range h.sb.SMTP.Messages() {
		if m.Subject == subject {
			n++
		}
	}
	return n
}

func sendSubject(h *harness, from, subject string, to ...string) (string, error) {
	if len(to) == 0 {
		to = []string{"rcpt@example.net"}
	}
	return testutil.Send(h.addr, testutil.Mail{User: appClient, Password: h.password, From: from, To: to,
		Body: "Subject: " + subject + "\r\nMessage-ID: <" + subject + "@client.test>\r\n\r\nbody of " + subject + "\r\n"})
}

func queueID(t *testing.T, reply string) string {
	t.Helper()
	_, id, ok := strings.Cut(reply, "queued as ")
	if !ok || id == "" {
		t.Fatalf("250 reply %q does not name the queue ID", reply)
	}
	return strings.TrimSpace(id)
}

func TestQueueModeStoresThenDelivers(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{telemetry: true})
	reply, err := sendSubject(h, alice, "q-1", "a@example.net", "b@example.net")
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	await(t, "delivery", 15*time.Second, func() bool { return delivered(h, "q-1") == 1 })
	st := openStore(t, dir)
	var rec *store.Record
	var events []*store.Event
	await(t, "the final state in the history", 10*time.Second, func() bool {
		rec, events, err = st.History(context.Background(), id)
		return err == nil && rec.State == store.StateDelivered
	})
	if rec.Mode != "queue" || rec.Account != alice || rec.HeaderID != "<q-1@client.test>" || len(rec.Rcpts) != 2 {
		t.Errorf("history record %+v", rec)
	}
	types := []string{}
	for _, e := range events {
		types = append(types, e.Type)
	}
	if types[0] != store.EventAccepted || !strings.Contains(strings.Join(types, ","), store.EventDelivered) {
		t.Errorf("trail %v: want accepted ... delivered", types)
	}
	if _, err := st.Body(context.Background(), id); err == nil {
		t.Error("the body is still stored after delivery")
	}
	msgs := h.sb.SMTP.Messages()
	if got := msgs[len(msgs)-1]; got.User != alice || len(got.To) != 2 || !strings.Contains(string(got.Data), "body of q-1") {
		t.Errorf("sandbox got %+v", got)
	}
}

// While the provider refuses every DATA with a 4xx the client still gets
// 250 at once; the messages wait, each is retried, and every one is
// delivered exactly once after the provider recovers.
func TestQueueRidesOutAnOutage(t *testing.T) {
	// The account's circuit opens after a few failures; the queue then
	// postpones instead of trying. A short open period keeps the test fast.
	h, dir := queueingHarness(t, harnessOptions{telemetry: true, providerExtra: `circuit_open_timeout = "1s"`})
	h.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	const n = 10
	for i := 0; i < n; i++ {
		if _, err := sendSubject(h, alice, fmt.Sprintf("outage-%d", i)); err != nil {
			t.Fatalf("message %d: %v (queue mode must accept during an outage)", i, err)
		}
	}
	st := openStore(t, dir)
	await(t, "failed attempts and an open circuit", 20*time.Second, func() bool {
		msgs, err := st.List(context.Background(), store.Filter{})
		return err == nil && len(msgs) == n &&
			h.metric(`oauthrelay_queue_attempts_total{result="deferred"}`) >= 1 &&
			h.metric(`oauthrelay_queue_postponed_total{reason="circuit"}`) >= 1
	})
	if c := len(h.sb.SMTP.Messages()); c != 0 {
		t.Fatalf("%d messages reached the inbox during the outage", c)
	}
	h.sb.SMTP.FailEveryNthData(0, nil)
	for i := 0; i < n; i++ {
		subject := fmt.Sprintf("outage-%d", i)
		await(t, subject, 30*time.Second, func() bool { return delivered(h, subject) >= 1 })
	}
	await(t, "an empty queue", 10*time.Second, func() bool {
		msgs, err := st.List(context.Background(), store.Filter{})
		return err == nil && len(msgs) == 0
	})
	for i := 0; i < n; i++ {
		if c := delivered(h, fmt.Sprintf("outage-%d", i)); c != 1 {
			t.Errorf("outage-%d delivered %d times", i, c)
		}
	}
}

// A provider that cannot be reached at all: messages wait, and go out once
// a reload points the provider at a working address.
func TestQueueRidesOutAnUnreachableProvider(t *testing.T) {
	down := testutil.FreeAddr(t)
	h, dir := queueingHarness(t, harnessOptions{smtpAddress: down})
	for i := 0; i < 3; i++ {
		if _, err := sendSubject(h, alice, fmt.Sprintf("down-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st := openStore(t, dir)
	await(t, "failed attempts", 20*time.Second, func() bool {
		msgs, _ := st.List(context.Background(), store.Filter{})
		return len(msgs) == 3 && msgs[0].Attempts >= 1
	})
	h.rewrite(strings.Replace(h.cfgText, fmt.Sprintf("smtp_address   = %q", down), fmt.Sprintf("smtp_address   = %q", h.sb.SMTP.Addr), 1))
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		subject := fmt.Sprintf("down-%d", i)
		await(t, subject, 30*time.Second, func() bool { return delivered(h, subject) == 1 })
	}
}

// A recipient the provider refuses for good gets the sender one RFC 3464
// notification, sent through the same account; the other recipient is
// delivered.
func TestQueueBouncesPermanentFailures(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{})
	h.sb.SMTP.FailNextData(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam."})
	reply, err := sendSubject(h, alice, "spam-1", "x@example.net")
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	var dsn devsandbox.Message
	await(t, "the delivery-status notification", 20*time.Second, func() bool {
		for _, m := range h.sb.SMTP.Messages() {
			if m.Subject == "Undelivered Mail Returned to Sender" {
				dsn = m
				return true
			}
		}
		return false
	})
	if dsn.User != alice || len(dsn.To) != 1 || dsn.To[0] != alice {
		t.Errorf("notification sent as %s to %v, want through %s to the sender", dsn.User, dsn.To, alice)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(dsn.Data)))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	if msg.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", msg.Header.Get("Auto-Submitted"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	parts := map[string]string{}
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b := new(strings.Builder)
		_, _ = fmt.Fprint(b, readPart(t, p))
		parts[strings.Split(p.Header.Get("Content-Type"), ";")[0]] = b.String()
	}
	status := parts["message/delivery-status"]
	for _, want := range []string{"Final-Recipient: rfc822; x@example.net", "Action: failed", "Status: 5.7.1", "Diagnostic-Code: smtp; 550 5.7.1", id} {
		if !strings.Contains(status+parts["text/plain"], want) {
			t.Errorf("notification lacks %q:\n%s", want, status)
		}
	}
	if hdrs := parts["text/rfc822-headers"]; !strings.Contains(hdrs, "Subject: spam-1") || strings.Contains(string(dsn.Data), "body of spam-1") {
		t.Errorf("the notification must return the original's header section and never its body:\n%s", dsn.Data)
	}
	// The failed message is final; the notification itself was delivered.
	st := openStore(t, dir)
	await(t, "the bounced state", 10*time.Second, func() bool {
		rec, _, err := st.History(context.Background(), id)
		return err == nil && rec.State == store.StateBounced
	})
	if c := delivered(h, "spam-1"); c != 0 {
		t.Errorf("the refused message reached the provider's inbox %d times", c)
	}
}

// A burst over the account's rate limit is accepted at once and delivered
// at the allowed pace, instead of being refused with 451.
func TestQueueSmoothsABurstUnderARateLimit(t *testing.T) {
	h, _ := queueingHarness(t, harnessOptions{telemetry: true, aliceExtra: "rate_limit_per_minute = 120\n    rate_limit_burst = 2"})
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sendSubject(h, alice, fmt.Sprintf("burst-%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a message of the burst was refused: %v", err)
	}
	for i := 0; i < n; i++ {
		subject := fmt.Sprintf("burst-%d", i)
		await(t, subject, 30*time.Second, func() bool { return delivered(h, subject) == 1 })
	}
	if v := h.metric(`oauthrelay_queue_postponed_total{reason="limit"}`); v < 1 {
		t.Errorf("postponed by the limit = %v: the burst was not paced by the queue", v)
	}
	if v := h.metric(`oauthrelay_limit_rejections_total{account="alice@example.com",limit="rate_per_minute"}`); v > 0 {
		t.Errorf("clients were refused by the limit %v times", v)
	}
}

func readPart(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A refresh token revoked overnight: queued mail waits (the attempts fail
// with 454 and are retried, never bounced), and goes out once the account
// is re-authorised.
func TestQueueRecoversFromATokenRevocation(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{providerExtra: `circuit_open_timeout = "1s"`})
	h.sb.Tokens.RevokeRefreshToken(h.rts[alice])
	for i := 0; i < 3; i++ {
		if _, err := sendSubject(h, alice, fmt.Sprintf("revoked-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st := openStore(t, dir)
	await(t, "failed attempts", 20*time.Second, func() bool {
		msgs, _ := st.List(context.Background(), store.Filter{})
		for _, m := range msgs {
			if m.Attempts >= 1 && strings.HasPrefix(m.LastReply, "454 4.7.0") {
				return len(msgs) == 3
			}
		}
		return false
	})
	rt := h.sb.Tokens.IssueRefreshToken(delegatedClientID, alice, "https://mail.google.com/")
	h.secrets = append(h.secrets, rt)
	testutil.WriteFile(t, h.dir, "rt-"+alice, rt)
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		subject := fmt.Sprintf("revoked-%d", i)
		await(t, subject, 30*time.Second, func() bool { return delivered(h, subject) == 1 })
	}
}

// A second relay on the store of a running one does not start: both would
// take the same leases for their own (they are named after the host) and
// deliver the same messages twice.
func TestSecondRelayOnAStoreIsRefused(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{})
	loaded := config.Load(h.cfgPath, h.overrides)
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("config: %v", loaded.Diagnostics)
	}
	rt, err := server.New(context.Background(), loaded.Config, server.Options{ConfigPath: h.cfgPath, Overrides: h.overrides})
	if err == nil {
		_ = rt.Shutdown(context.Background())
		t.Fatal("a second relay started on the store of a running one")
	}
	if !strings.Contains(err.Error(), "in use by another relay") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error = %v, want the store %s named as in use by another relay", err, dir)
	}
	// The first relay still queues and delivers.
	if _, err := sendSubject(h, alice, "still-running"); err != nil {
		t.Fatal(err)
	}
	await(t, "the first relay's delivery", 30*time.Second, func() bool { return delivered(h, "still-running") == 1 })
}
