package bounce

import (
	"strings"
	"testing"
)

func TestEligible(t *testing.T) {
	const plain = "From: a@example.com\r\nSubject: hi\r\n\r\nbody"
	tests := []struct {
		name, from, header string // header "" means none known (nil)
		ok                 bool
		reason             string // a part of the reason
	}{
		{"normal message", "alice@example.com", plain, true, ""},
		{"no header known", "alice@example.com", "", true, ""},
		{"sender in angle brackets", "<alice@example.com>", plain, true, ""},
		{"null sender", "", plain, false, "null reverse-path"},
		{"null sender in brackets", "<>", plain, false, "null reverse-path"},
		{"null sender with spaces", " <> ", plain, false, "null reverse-path"},
		{"mailer-daemon", "MAILER-DAEMON@example.com", plain, false, "MAILER-DAEMON"},
		{"mailer-daemon quoted, lower case", `"mailer-daemon"@example.com`, plain, false, "MAILER-DAEMON"},
		{"postmaster is a person", "postmaster@example.com", plain, true, ""},
		{"list bounce processor", "list-bounces+alice=example.com@lists.example.org", plain, true, ""},
		{"sender with CRLF", "alice@example.com\r\nBcc: x@example.net", plain, false, "header field"},
		{"sender without domain", "alice", plain, false, "header field"},
		{"DSN original", "alice@example.com",
			"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"b\"\r\n\r\n", false, "report-type=delivery-status"},
		{"DSN original, type in capitals", "alice@example.com",
			"CONTENT-TYPE: Multipart/Report; Report-Type=\"Delivery-Status\"; boundary=b\r\n\r\n", false, "report-type=delivery-status"},
		{"MDN original", "alice@example.com",
			"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n", false, "disposition-notification"},
		{"report without report-type", "alice@example.com",
			"Content-Type: multipart/report; boundary=b\r\n\r\n", false, "report-type=unknown"},
		{"malformed report Content-Type", "alice@example.com",
			"Content-Type: multipart/report; report-type=\"unterminated\r\n\r\n", false, "report-type=unknown"},
		{"other multipart", "alice@example.com",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n", true, ""},
		{"a report attached, not the message", "alice@example.com",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/report; report-type=delivery-status\r\n", true, ""},
		{"Auto-Submitted: auto-replied", "alice@example.com",
			"Auto-Submitted: auto-replied\r\n\r\n", false, "Auto-Submitted: auto-replied"},
		{"Auto-Submitted: auto-generated", "alice@example.com",
			"Auto-Submitted: Auto-Generated\r\n\r\n", false, "Auto-Submitted: auto-generated"},
		{"Auto-Submitted: auto-notified with parameter", "alice@example.com",
			"Auto-Submitted: auto-notified; owner-email=\"x@example.com\"\r\n\r\n", false, "Auto-Submitted: auto-notified"},
		{"Auto-Submitted: no", "alice@example.com", "Auto-Submitted: no\r\n\r\n", true, ""},
		{"Auto-Submitted: no with comment", "alice@example.com", "Auto-Submitted: (a person) No (really)\r\n\r\n", true, ""},
		{"Auto-Submitted: no, then another", "alice@example.com",
			"Auto-Submitted: no\r\nAuto-Submitted: auto-generated\r\n\r\n", false, "auto-generated"},
		{"Auto-Submitted empty", "alice@example.com", "Auto-Submitted:\r\n\r\n", false, "Auto-Submitted: invalid"},
		{"Auto-Submitted garbage is quoted safely", "alice@example.com",
			"Auto-Submitted: \x1b[31mred\r\n\r\n", false, "Auto-Submitted: invalid"},
		{"Auto-Submitted in the body", "alice@example.com",
			"Subject: x\r\n\r\nAuto-Submitted: auto-replied\r\n", true, ""},
		{"Precedence: bulk is still answered", "alice@example.com",
			"Precedence: bulk\r\nList-Id: <l.example.org>\r\n\r\n", true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h *Header
			if tc.header != "" {
				h = readHeader(t, tc.header)
			}
			ok, reason := Eligible(tc.from, h)
			if ok != tc.ok || !strings.Contains(reason, tc.reason) || ok != (reason == "") {
				t.Errorf("Eligible(%q) = %v, %q; want %v, %q", tc.from, ok, reason, tc.ok, tc.reason)
			}
			if strings.ContainsFunc(reason, isControl) || len(reason) > 200 {
				t.Errorf("reason %q is not a short printable line", reason)
			}
		})
	}
}

// TestEligibleOwnNotification: a notification Build wrote is never
// answered, even if it comes back with a sender.
func TestEligibleOwnNotification(t *testing.T) {
	raw, err := Build(original(t), []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}}, options())
	if err != nil {
		t.Fatal(err)
	}
	ok, reason := Eligible("ops@example.com", readHeader(t, string(raw)))
	if ok || !strings.Contains(reason, "report-type=delivery-status") {
		t.Errorf("Eligible = %v, %q", ok, reason)
	}
}
