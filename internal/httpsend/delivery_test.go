package httpsend_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func newDelivery(env transport.Envelope, lim limits.Limiter) *httpsend.Delivery {
	return &httpsend.Delivery{Env: env, Tokens: &tokens{}, Provider: "the Test API",
		Adm: &httpsend.Admission{Account: mailbox, Provider: "the Test API", Limits: lim}}
}

// The recipients an HTTP API is told: each address once, only addresses a
// header can name, NOTIFY only as a provider without DSN meets it (unless
// the caller sends its own notices).
func TestDeliveryRecipients(t *testing.T) {
	d := newDelivery(transport.Envelope{Account: mailbox}, nil)
	if err := d.Start(context.Background(), 100, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rcpt   string
		notify []string
		code   string
	}{
		{"a@example.net", nil, ""},
		{"A@Example.net", nil, ""}, // the same address
		{"b@example.net", []string{"FAILURE"}, ""},
		{"c@example.net", []string{"SUCCESS"}, "555 5.3.3"},
		{"not an address", nil, "501 5.1.3"},
	}
	for _, tt := range tests {
		err := d.AddRcpt(context.Background(), tt.rcpt, transport.RcptOptions{Notify: tt.notify})
		if got := replyCode(err); got != tt.code {
			t.Errorf("AddRcpt(%q, %v) = %q (%v), want %q", tt.rcpt, tt.notify, got, err, tt.code)
		}
	}
	if got := strings.Join(d.Rcpts(), " "); got != "a@example.net b@example.net" {
		t.Errorf("Rcpts = %s", got)
	}
	own := newDelivery(transport.Envelope{Account: mailbox, Mail: transport.MailOptions{OwnNotices: true}}, nil)
	_ = own.Start(context.Background(), 100, nil)
	if err := own.AddRcpt(context.Background(), "c@example.net", transport.RcptOptions{Notify: []string{"SUCCESS"}}); err != nil {
		t.Errorf("NOTIFY=SUCCESS for a caller with its own notices: %v", err)
	}
}

// Send keeps the reservation only when the provider accepted; a refusal
// by the relay itself (no recipient, an unreadable message) contacts
// nobody.
func TestDeliverySend(t *testing.T) {
	lim := limits.NewAccountLimits(0, 0, 1, 0, 0)
	sent := 0
	send := func(ctx context.Context) (string, *httpsend.Failure) { sent++; return "250 ok", nil }
	failing := func(ctx context.Context) (string, *httpsend.Failure) {
		sent++
		return "", httpsend.Local(httpsend.ReplyLocal, errors.New("boom"))
	}
	run := func(s func(context.Context) (string, *httpsend.Failure), rcpts int) error {
		d := newDelivery(transport.Envelope{Account: mailbox}, lim)
		if err := d.Start(context.Background(), 100, nil); err != nil {
			return err
		}
		for i := range rcpts {
			_ = d.AddRcpt(context.Background(), string(rune('a'+i))+"@example.net", transport.RcptOptions{})
		}
		_, err := d.Send(context.Background(), func() (func(context.Context) (string, *httpsend.Failure), *httpsend.Failure) { return s, nil })
		return err
	}
	if err := run(send, 0); replyCode(err) != "503 5.5.1" || sent != 0 {
		t.Errorf("no recipients: %v (sent %d)", err, sent)
	}
	if err := run(failing, 1); err == nil || sent != 1 {
		t.Errorf("failed send: %v (sent %d)", err, sent)
	}
	if err := run(send, 1); err != nil || sent != 2 {
		t.Fatalf("send after a failed one (its reservation given back): %v", err)
	}
	if err := run(send, 1); replyCode(err) != "451 4.7.0" {
		t.Errorf("second send over a daily limit of 1: %v", err)
	}
}

// replyCode is the code and enhanced code of a transport error's reply
// ("" for nil).
func replyCode(err error) string {
	var te *transport.Error
	if !errors.As(err, &te) {
		return ""
	}
	code, _, _ := strings.Cut(transport.ReplyText(te.Reply), " ")
	enh, _, _ := strings.Cut(strings.TrimPrefix(transport.ReplyText(te.Reply), code+" "), " ")
	return code + " " + enh
}
