package server_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// rcptWith is a recipient and its RCPT parameters.
type rcptWith struct {
	addr string
	opts *smtp.RcptOptions
}

// sendWith submits one message with MAIL and RCPT parameters as the app
// client and returns the 250 text, or the first refusal.
func sendWith(t *testing.T, h *harness, mopts *smtp.MailOptions, body string, rcpts ...rcptWith) (string, error) {
	t.Helper()
	c := dialAuth(t, h, appClient)
	if err := c.Mail(alice, mopts); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r.addr, r.opts); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// relayedAsIs checks that the provider got body byte for byte behind the
// relay's Received header.
func relayedAsIs(t *testing.T, m devsandbox.Message, body string) {
	t.Helper()
	data := string(m.Data)
	head, ok := strings.CutSuffix(data, body)
	if !ok || !strings.HasPrefix(head, "Received: ") || strings.Count(head, "\r\n") != 3 {
		t.Errorf("the provider got\n%q\nwant the Received header and then\n%q", data, body)
	}
}

func onlyMessage(t *testing.T, h *harness, subject string) devsandbox.Message {
	t.Helper()
	var found []devsandbox.Message
	for _, m := range h.sb.SMTP.Messages() {
		if m.Subject == subject {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d messages with subject %q at the provider, want 1", len(found), subject)
	}
	return found[0]
}

const (
	utf8Rcpt   = "jösé@example.net"
	utf8Header = "Subject: Grüße aus Köln\r\nFrom: Jörg <alice@example.com>\r\nTo: José <jösé@example.net>\r\n\r\n"
	utf8Body   = "Straße, 東京, naïve café.\r\n"
)

// A provider that offers SMTPUTF8, 8BITMIME and DSN (as Microsoft's
// does) gets every parameter the client gave, and the message unchanged.
func TestExtensionsPassThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := utf8Header + utf8Body
	_, err := sendWith(t, h, &smtp.MailOptions{UTF8: true, Body: smtp.Body8BitMIME, Return: smtp.DSNReturnHeaders, EnvelopeID: "batch-7+x=y"}, body,
		rcptWith{utf8Rcpt, &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure},
			OriginalRecipientType: smtp.DSNAddressTypeUTF8, OriginalRecipient: "jösé+1@example.org"}},
		rcptWith{"plain@example.net", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever},
			OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "Plain+Old=1@example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	m := onlyMessage(t, h, "Grüße aus Köln")
	relayedAsIs(t, m, body)
	for _, p := range []string{"BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=batch-7+x=y"} {
		if !slices.Contains(m.MailParams, p) {
			t.Errorf("MAIL parameters at the provider %q lack %s", m.MailParams, p)
		}
	}
	if got := m.RcptParams[utf8Rcpt]; !slices.Equal(got, []string{"NOTIFY=SUCCESS,FAILURE", "ORCPT=utf-8;jösé+1@example.org"}) {
		t.Errorf("RCPT parameters of %s at the provider %q", utf8Rcpt, got)
	}
	if got := m.RcptParams["plain@example.net"]; !slices.Equal(got, []string{"NOTIFY=NEVER", "ORCPT=rfc822;Plain+Old=1@example.org"}) {
		t.Errorf("RCPT parameters of plain@ at the provider %q", got)
	}
	// On the wire the values are xtext (RFC 3461 §4).
	wire := strings.Join(h.sb.SMTP.Commands("MAIL", "RCPT"), "\n")
	for _, want := range []string{"ENVID=batch-7+2Bx+3Dy", `ORCPT=utf-8;j\x{F6}s\x{E9}\x{2B}1@example.org`, "ORCPT=rfc822;Plain+2BOld+3D1@example.org"} {
		if !strings.Contains(wire, want) {
			t.Errorf("the provider's transcript lacks %q:\n%s", want, wire)
		}
	}
}

// A provider without an extension: what needs it is refused with a
// permanent reply of the relay's own before the provider sees it; what
// does not need it goes out without the parameter.
func TestProviderWithoutAnExtension(t *testing.T) {
	notify := func(n ...smtp.DSNNotify) *smtp.RcptOptions { return &smtp.RcptOptions{Notify: n} }
	tests := []struct {
		name    string
		without string
		mail    *smtp.MailOptions
		rcpt    rcptWith
		body    string
		want    string   // reply code, "" for delivered
		params  []string // MAIL parameters the provider must not see
	}{
		{"UTF-8 recipient", devsandbox.ExtSMTPUTF8, &smtp.MailOptions{UTF8: true}, rcptWith{utf8Rcpt, nil}, "Subject: u1\r\n\r\nx\r\n", "553 5.6.7", nil},
		{"UTF-8 header", devsandbox.ExtSMTPUTF8, &smtp.MailOptions{UTF8: true}, rcptWith{"r@example.net", nil}, "Subject: Grüße\r\n\r\nx\r\n", "554 5.6.9", nil},
		{"SMTPUTF8 not needed", devsandbox.ExtSMTPUTF8, &smtp.MailOptions{UTF8: true}, rcptWith{"r@example.net", nil}, "Subject: u3\r\n\r\nx\r\n", "", []string{"SMTPUTF8"}},
		{"8-bit body", devsandbox.Ext8BitMIME, nil, rcptWith{"r@example.net", nil}, "Subject: e1\r\n\r\n" + utf8Body, "554 5.6.3", nil},
		{"7-bit body declared 8BITMIME", devsandbox.Ext8BitMIME, nil, rcptWith{"r@example.net", nil}, "Subject: e2\r\n\r\nplain\r\n", "", []string{"BODY=8BITMIME"}},
		{"NOTIFY=SUCCESS", devsandbox.ExtDSN, nil, rcptWith{"r@example.net", notify(smtp.DSNNotifySuccess, smtp.DSNNotifyFailure)}, "Subject: d1\r\n\r\nx\r\n", "555 5.3.3", nil},
		{"NOTIFY=NEVER", devsandbox.ExtDSN, nil, rcptWith{"r@example.net", notify(smtp.DSNNotifyNever)}, "Subject: d2\r\n\r\nx\r\n", "555 5.3.3", nil},
		{"NOTIFY=FAILURE,DELAY", devsandbox.ExtDSN, &smtp.MailOptions{Return: smtp.DSNReturnFull, EnvelopeID: "e-4"},
			rcptWith{"r@example.net", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "o@example.org"}},
			"Subject: d3\r\n\r\nx\r\n", "", []string{"RET=FULL", "ENVID=e-4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{without: []string{tc.without}, providerExtra: `circuit_failure_threshold = 1
  circuit_open_timeout = "10m"`})
			_, err := sendWith(t, h, tc.mail, tc.body, tc.rcpt)
			if tc.want != "" {
				wantCode(t, err, tc.want)
				if n := len(h.sb.SMTP.Messages()); n != 0 {
					t.Errorf("the provider got %d messages", n)
				}
				// A refusal of the relay's own is no provider failure: the
				// account's circuit (one failure opens it) stays closed.
				h.mustSend(appClient, alice)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := h.sb.SMTP.Messages()[0]
			relayedAsIs(t, m, tc.body)
			for _, p := range tc.params {
				if slices.Contains(m.MailParams, p) {
					t.Errorf("the provider without %s got %s", tc.without, p)
				}
			}
			if len(m.RcptParams) != 0 {
				t.Errorf("the provider got RCPT parameters %v", m.RcptParams)
			}
		})
	}
}

// dsnParts parses a notification: its Subject and its parts by type.
func dsnParts(t *testing.T, m devsandbox.Message) (string, map[string]string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(m.Data)))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	parts := map[string]string{}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		parts[strings.Split(p.Header.Get("Content-Type"), ";")[0]] = readPart(t, p)
	}
	return msg.Header.Get("Subject"), parts
}

// notices returns the notifications the sandbox got for alice about a
// message with queue ID id.
func notices(h *harness, id string) []devsandbox.Message {
	var out []devsandbox.Message
	for _, m := range h.sb.SMTP.Messages() {
		if strings.Contains(m.Subject, "Mail") && strings.Contains(string(m.Data), id) && slices.Equal(m.To, []string{alice}) {
			out = append(out, m)
		}
	}
	return out
}

func wantFields(t *testing.T, report string, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if !strings.Contains(report, f+"\r\n") {
			t.Errorf("delivery-status lacks %q:\n%s", f, report)
		}
	}
}

// Queue mode with a provider without DSN: the relay honours NOTIFY
// itself — a "relayed" notice for SUCCESS, a failure notice for FAILURE
// (or no NOTIFY), none for NEVER — with ENVID and ORCPT in the report and
// the original's header only, whatever RET asks.
func TestQueueHonoursDSNWithoutProviderDSN(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{without: []string{devsandbox.ExtDSN}})
	refuse := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	h.sb.SMTP.SetRcptReply("gone-never@example.net", refuse)
	h.sb.SMTP.SetRcptReply("gone@example.net", refuse)
	orcpt := func(n smtp.DSNNotify, addr string) *smtp.RcptOptions {
		return &smtp.RcptOptions{Notify: []smtp.DSNNotify{n}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: addr}
	}
	body := "Subject: dsn-queue\r\nMessage-ID: <dsn-queue@client.test>\r\n\r\nsecret body text\r\n"
	reply, err := sendWith(t, h, &smtp.MailOptions{Return: smtp.DSNReturnFull, EnvelopeID: "batch-9"}, body,
		rcptWith{"ok@example.net", orcpt(smtp.DSNNotifySuccess, "Orig-OK@example.org")},
		rcptWith{"gone-never@example.net", orcpt(smtp.DSNNotifyNever, "never@example.org")},
		rcptWith{"gone@example.net", orcpt(smtp.DSNNotifyFailure, "Orig-Gone@example.org")})
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	st := openStore(t, dir)
	await(t, "the message to be final", 20*time.Second, func() bool {
		rec, _, err := st.History(context.Background(), id)
		return err == nil && rec.State == store.StateBounced
	})
	await(t, "two notifications", 20*time.Second, func() bool { return len(notices(h, id)) == 2 })
	got := map[string]map[string]string{}
	for _, m := range notices(h, id) {
		subject, parts := dsnParts(t, m)
		got[subject] = parts
		if strings.Contains(string(m.Data), "secret body text") {
			t.Errorf("a notification returned the body although the README promises never to:\n%s", m.Data)
		}
		if !strings.Contains(parts["text/rfc822-headers"], "Subject: dsn-queue") {
			t.Errorf("%q lacks the original's header", subject)
		}
		if strings.Contains(parts["message/delivery-status"], "never@example.org") {
			t.Errorf("a NOTIFY=NEVER recipient was reported in %q", subject)
		}
	}
	relayed := got["Successful Mail Delivery Report"]["message/delivery-status"]
	wantFields(t, relayed, "Original-Envelope-Id: batch-9", "Original-Recipient: rfc822; Orig-OK@example.org",
		"Final-Recipient: rfc822; ok@example.net", "Action: relayed", "Status: 2.0.0")
	failed := got["Undelivered Mail Returned to Sender"]["message/delivery-status"]
	wantFields(t, failed, "Original-Envelope-Id: batch-9", "Original-Recipient: rfc822; Orig-Gone@example.org",
		"Final-Recipient: rfc822; gone@example.net", "Action: failed", "Status: 5.1.1")
	if strings.Contains(failed, "ok@example.net") || strings.Contains(relayed, "gone@example.net") {
		t.Error("a notification reports a recipient of the other action")
	}
	m := onlyMessage(t, h, "dsn-queue")
	if len(m.RcptParams) != 0 || slices.Contains(m.MailParams, "RET=FULL") || slices.Contains(m.MailParams, "ENVID=batch-9") {
		t.Errorf("the provider without DSN got DSN parameters: %q %v", m.MailParams, m.RcptParams)
	}
}

// Queue mode with a provider that offers DSN: the parameters go to the
// provider, whose own notifications reach the sender; the relay sends no
// "relayed" notice.
func TestQueuePassesDSNToTheProvider(t *testing.T) {
	h, dir := queueingHarness(t, harnessOptions{})
	body := "Subject: dsn-pass\r\n\r\nx\r\n"
	reply, err := sendWith(t, h, &smtp.MailOptions{UTF8: true, Return: smtp.DSNReturnHeaders, EnvelopeID: "p-1"}, body,
		rcptWith{utf8Rcpt, &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyDelayed},
			OriginalRecipientType: smtp.DSNAddressTypeUTF8, OriginalRecipient: utf8Rcpt}})
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	await(t, "delivery", 20*time.Second, func() bool { return delivered(h, "dsn-pass") == 1 })
	m := onlyMessage(t, h, "dsn-pass")
	relayedAsIs(t, m, body)
	for _, p := range []string{"SMTPUTF8", "RET=HDRS", "ENVID=p-1"} {
		if !slices.Contains(m.MailParams, p) {
			t.Errorf("MAIL parameters at the provider %q lack %s", m.MailParams, p)
		}
	}
	if got := m.RcptParams[utf8Rcpt]; !slices.Equal(got, []string{"NOTIFY=SUCCESS,DELAY", "ORCPT=utf-8;" + utf8Rcpt}) {
		t.Errorf("RCPT parameters at the provider %q", got)
	}
	st := openStore(t, dir)
	await(t, "the delivered state", 10*time.Second, func() bool {
		rec, _, err := st.History(context.Background(), id)
		return err == nil && rec.State == store.StateDelivered
	})
	_, events, err := st.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.Type == store.EventNotified {
			t.Errorf("the relay notified (%s) although the provider took the DSN request", ev.Reply)
		}
	}
}

// BDAT (CHUNKING, RFC 3030) from a client, spoken on a raw socket: chunks
// of several sizes and an empty LAST chunk arrive at the provider byte
// for byte; the relay sends DATA upstream.
func TestBDATFromClients(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := bufio.NewReader(conn)
	expect := func(code string) {
		t.Helper()
		for {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply (want %s): %v", code, err)
			}
			if !strings.HasPrefix(line, code) {
				t.Fatalf("reply %q, want %s", line, code)
			}
			if line[3] == ' ' {
				return
			}
		}
	}
	send := func(s string) {
		t.Helper()
		if _, err := conn.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	expect("220")
	send("EHLO client.test\r\n")
	expect("250")
	send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+appClient+"\x00"+h.password)) + "\r\n")
	expect("235")
	send("MAIL FROM:<" + alice + "> BODY=8BITMIME\r\nRCPT TO:<bdat@example.net>\r\n")
	expect("250")
	expect("250")
	// Larger than go-smtp's and TLS's buffers, within the harness's 64KB limit.
	big := strings.Repeat("0123456789abcdef ünïcödé line\r\n", 1500) // ~51 KB
	chunks := []string{"Subject: bdat\r\n", "\r\nfirst chunk, no line end yet", " ... ended\r\n" + big, ""}
	for i, c := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		send(fmt.Sprintf("BDAT %d%s\r\n%s", len(c), last, c))
		expect("250")
	}
	send("QUIT\r\n")
	expect("221")
	m := onlyMessage(t, h, "bdat")
	relayedAsIs(t, m, strings.Join(chunks, ""))
	for _, line := range h.sb.SMTP.Commands("BDAT") {
		t.Errorf("the relay sent %q upstream; it sends DATA", line)
	}
	if len(h.sb.SMTP.Commands("DATA")) == 0 {
		t.Error("no DATA upstream")
	}
}
