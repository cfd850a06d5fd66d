package bounce

import (
	"bytes"
	"strings"
	"testing"
)

// bodyMarker starts every body line of the fuzzed originals.
const bodyMarker = "bodymarker-7f3a"

// FuzzBuild: whatever the original's header, the addresses, replies and
// identifiers, Build either refuses an unaddressable sender or an empty
// recipient, or returns a notification that net/mail and mime/multipart
// parse, with CRLF line endings and lines within 998 octets, exactly the
// documented header fields, one recipient block — and no line of the
// original's body.
func FuzzBuild(f *testing.F) {
	f.Add(originalHeader, "alice@example.com", "bob@example.org", "", gmailNoSuchUser, "", "", "", "Q1", 0)
	f.Add("Subject: hi\n\tthere\nX: y", `"john doe"@example.com`, "zoë@exämple.org", "utf-8;zoë@exämple.org",
		"", "message expired after 5d in the queue", "4.4.7", "env+2Bid", "Q2", 20)
	f.Add("Subject: x\r\nnot a field\r\n", "jörg@bücher.de", "bob@example.org\r\nBcc: x@example.net",
		"rfc822;a\r\nb", "550 5.1.1 a\r\nX-Injected: b\x00", "r\x1b", "5.1.1\r\nX: y", "id\r\nX: y", "Q\r\n3", -1)
	f.Add("Content-Type: multipart/report; report-type=delivery-status; boundary==_bounce_\r\n\r\n--=_bounce_",
		"<>", " ", "", "", "", "", "", "", 1<<20)
	f.Add("X-Long: "+strings.Repeat("z", 3000)+"\r\nSubject: =?utf-8?b?"+strings.Repeat("QUJD", 100)+"?=",
		"a@[192.0.2.1]", strings.Repeat("w", 2000)+"@example.org", "x400;"+strings.Repeat("v ", 600),
		strings.Repeat("550 5.1.1 ", 500), strings.Repeat("é", 900), "", strings.Repeat("+", 300), strings.Repeat("q", 400), 5000)
	f.Fuzz(func(t *testing.T, header, from, rcpt, orcpt, reply, reason, status, envid, queueID string, maxHeader int) {
		for _, s := range []string{header, from, rcpt, orcpt, reply, reason, status, envid, queueID} {
			if strings.Contains(strings.ToLower(s), bodyMarker) {
				return
			}
		}
		if strings.Contains(strings.ToLower(decodeWords(header)), bodyMarker) {
			return
		}
		message := header + "\r\n\r\n" + bodyMarker + "-1 secret\r\n" + bodyMarker + "-2: looks like a field\r\n"
		h, err := ReadHeader(strings.NewReader(message))
		if err != nil {
			t.Fatal(err)
		}
		orig := Original{QueueID: queueID, From: from, Arrival: arrival, EnvID: envid, Header: h}
		failures := []Failure{{Rcpt: rcpt, ORcpt: orcpt, Status: status, Reply: reply, Reason: reason, LastAttempt: tried}}
		o := options()
		o.MaxHeaderBytes = maxHeader % (1 << 17)
		raw, err := Build(orig, failures, o)
		if err != nil {
			if _, aerr := headerAddress(from); aerr == nil && strings.TrimSpace(rcpt) != "" {
				t.Fatalf("Build refused a valid input: %v", err)
			}
			return
		}
		if bytes.Contains(bytes.ToLower(raw), []byte(bodyMarker)) {
			t.Fatalf("a body line is in the notification:\n%s", raw)
		}
		d, err := parseDSN(raw)
		if err != nil {
			t.Fatalf("%v\n%s", err, raw)
		}
		checkEnvelopeHeader(t, d, orig, o, subjects[ActionFailed])
		if len(d.rcpts) != 1 || d.rcpts[0].Get("Action") != "failed" || !statusCode.MatchString(d.rcpts[0].Get("Status")) {
			t.Fatalf("recipient blocks: %v", d.rcpts)
		}
		for _, decoded := range [][]byte{[]byte(d.text), d.headers, d.parts[1].body} {
			if bytes.Contains(bytes.ToLower(decoded), []byte(bodyMarker)) {
				t.Fatalf("a body line is in a decoded part:\n%s", decoded)
			}
		}
		if len(d.headers) > max(o.MaxHeaderBytes, 0) && o.MaxHeaderBytes != 0 {
			t.Fatalf("%d header bytes attached, cap %d", len(d.headers), o.MaxHeaderBytes)
		}
	})
}
