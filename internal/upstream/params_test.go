package upstream

import (
	"slices"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// offers returns has() for a provider's EHLO keywords.
func offers(ext ...string) func(string) bool {
	return func(name string) bool { return slices.Contains(ext, name) }
}

var everything = offers("8BITMIME", "SIZE", "SMTPUTF8", "DSN")

func TestMailParams(t *testing.T) {
	full := transport.MailOptions{Size: 10, Body: smtp.Body8BitMIME, UTF8: true, Return: "HDRS", EnvelopeID: "id 1"}
	tests := []struct {
		name    string
		from    string
		opts    transport.MailOptions
		has     func(string) bool
		want    []string
		dsn     bool
		refusal string
	}{
		{"all offered", "a@example.com", full, everything, []string{"BODY=8BITMIME", "SIZE=10", "SMTPUTF8", "RET=HDRS", "ENVID=id+201"}, true, ""},
		{"no DSN: RET and ENVID dropped", "a@example.com", full, offers("8BITMIME", "SMTPUTF8"), []string{"BODY=8BITMIME", "SMTPUTF8"}, false, ""},
		{"no 8BITMIME: checked at DATA", "a@example.com", full, offers("SMTPUTF8", "DSN"), []string{"SMTPUTF8", "RET=HDRS", "ENVID=id+201"}, true, ""},
		{"no SMTPUTF8, ASCII sender", "a@example.com", full, offers("8BITMIME", "DSN"), []string{"BODY=8BITMIME", "RET=HDRS", "ENVID=id+201"}, true, ""},
		{"no SMTPUTF8, UTF-8 sender", "jö@example.com", full, offers("8BITMIME", "DSN"), nil, false, "553 5.6.7"},
		{"7BIT only with 8BITMIME", "a@example.com", transport.MailOptions{Body: smtp.Body7Bit}, offers(), nil, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, dsn, err := mailParams(tc.from, tc.opts, tc.has)
			if tc.refusal != "" {
				if err == nil || code(err.ClientReply()) != tc.refusal || err.Kind() != transport.KindLocal {
					t.Fatalf("mailParams = %q, %v; want a local refusal %s", got, err, tc.refusal)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) || dsn != tc.dsn {
				t.Errorf("mailParams = %q, dsn %v, %v; want %q, dsn %v", got, dsn, err, tc.want, tc.dsn)
			}
		})
	}
}

func TestRcptParams(t *testing.T) {
	notify := func(n ...string) transport.RcptOptions { return transport.RcptOptions{Notify: n} }
	direct, queued := transport.MailOptions{UTF8: true}, transport.MailOptions{UTF8: true, OwnNotices: true}
	tests := []struct {
		name    string
		to      string
		mail    transport.MailOptions
		opts    transport.RcptOptions
		has     func(string) bool
		want    []string
		refusal string
	}{
		{"passed on", "r@example.net", direct, transport.RcptOptions{Notify: []string{"SUCCESS", "DELAY"}, ORcpt: "rfc822;R+1@example.org"}, everything,
			[]string{"NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;R+2B1@example.org"}, ""},
		{"utf-8 ORCPT", "r@example.net", direct, transport.RcptOptions{ORcpt: "utf-8;jö@example.org"}, everything, []string{`ORCPT=utf-8;j\x{F6}@example.org`}, ""},
		{"no DSN, direct, FAILURE", "r@example.net", direct, transport.RcptOptions{Notify: []string{"FAILURE", "DELAY"}, ORcpt: "rfc822;o@example.org"}, offers("SMTPUTF8"), nil, ""},
		{"no DSN, direct, SUCCESS", "r@example.net", direct, notify("SUCCESS", "FAILURE"), offers("SMTPUTF8"), nil, "555 5.3.3"},
		{"no DSN, direct, NEVER", "r@example.net", direct, notify("NEVER"), offers("SMTPUTF8"), nil, "555 5.3.3"},
		{"no DSN, direct, DELAY only", "r@example.net", direct, notify("DELAY"), offers("SMTPUTF8"), nil, "555 5.3.3"},
		{"no DSN, queue honours it", "r@example.net", queued, notify("SUCCESS"), offers("SMTPUTF8"), nil, ""},
		{"no SMTPUTF8, UTF-8 recipient", "jö@example.net", direct, transport.RcptOptions{}, offers("DSN"), nil, "553 5.6.7"},
		{"no SMTPUTF8, ASCII recipient", "r@example.net", direct, transport.RcptOptions{}, offers("DSN"), nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rcptParams(tc.to, tc.mail, tc.opts, tc.has)
			if tc.refusal != "" {
				if err == nil || code(err.ClientReply()) != tc.refusal || err.Retryable() || err.Broken() {
					t.Fatalf("rcptParams = %q, %v; want a refusal %s that keeps the connection", got, err, tc.refusal)
				}
				if acct, prov := outcomes(err); acct != 0 || prov != 0 {
					t.Errorf("a refusal of the relay's own counts against the circuits (%v, %v)", acct, prov)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("rcptParams = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func code(r *smtp.SMTPError) string {
	return transport.ReplyText(&smtp.SMTPError{Code: r.Code, EnhancedCode: r.EnhancedCode})[:9]
}
