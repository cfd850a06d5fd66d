package bounce

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	now     = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	arrival = now.Add(-5 * 24 * time.Hour)
	tried   = now.Add(-time.Hour)
)

// originalHeader is a header section as the relay stores it (with its own
// Received field first).
const originalHeader = "Received: from app1.example.com ([10.0.0.5])\r\n" +
	"\tby relay.example.com (oauthrelay) with ESMTPSA id Q1234;\r\n" +
	"\tMon, 09 Mar 2026 09:26:53 +0000\r\n" +
	"From: Alice <alice@example.com>\r\n" +
	"To: bob@example.org, carol@example.org\r\n" +
	"Subject: Quarterly report\r\n" +
	"Message-ID: <report-42@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n"

// bodySecret is the body of every original: it must never come back.
const bodySecret = "The merger closes on Friday; keep this confidential."

func readHeader(t *testing.T, message string) *Header {
	t.Helper()
	h, err := ReadHeader(strings.NewReader(message))
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	return h
}

func original(t *testing.T) Original {
	return Original{
		QueueID: "Q1234",
		From:    "alice@example.com",
		Arrival: arrival,
		Header:  readHeader(t, originalHeader+"\r\n"+bodySecret+"\r\n"),
	}
}

// fixedRand makes Message-ID and boundary reproducible.
func fixedRand() *rand.ChaCha8 { return rand.NewChaCha8([32]byte{'b', 'o', 'u', 'n', 'c', 'e'}) }

func options() Options {
	return Options{ReportingMTA: "relay.example.com", Account: "ops@example.com", Now: now, Rand: fixedRand()}
}

var gmailNoSuchUser = "550-5.1.1 The email account that you tried to reach does not exist. Please try " +
	"double-checking the recipient's email address for typos or unnecessary spaces. " +
	"https://support.google.com/mail/?p=NoSuchUser"

// build runs Build and parses its output; every check that holds for any
// notification is made here.
func build(t *testing.T, orig Original, failures []Failure, o Options) *dsn {
	t.Helper()
	raw, err := Build(orig, failures, o)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if bytes.Contains(raw, []byte(bodySecret)) {
		t.Fatalf("the original's body is in the notification:\n%s", raw)
	}
	d, err := parseDSN(raw)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	checkEnvelopeHeader(t, d, orig, o, subjects[action(failures)])
	if got := d.message.Get("Reporting-MTA"); got != "dns; "+o.ReportingMTA {
		t.Errorf("Reporting-MTA = %q", got)
	}
	if len(d.rcpts) != len(failures) {
		t.Fatalf("%d recipient blocks for %d failures:\n%s", len(d.rcpts), len(failures), d.parts[1].body)
	}
	for i, r := range d.rcpts {
		st := r.Get("Status")
		okStatus := statusCode.MatchString(st) && (actionOf(failures[i]) != ActionDelayed || st[0] == '4') ||
			actionOf(failures[i]) == ActionRelayed && successCode.MatchString(st)
		if r.Get("Action") != actionOf(failures[i]) || r.Get("Final-Recipient") == "" || !okStatus {
			t.Errorf("recipient block %d: %v", i+1, r)
		}
	}
	if strings.Contains(d.text, bodySecret) || bytes.Contains(d.headers, []byte(bodySecret)) {
		t.Fatal("the original's body is in a decoded part")
	}
	return d
}

// checkEnvelopeHeader checks the notification's own header fields: exactly
// the expected set, each as documented.
func checkEnvelopeHeader(t *testing.T, d *dsn, orig Original, o Options, subject string) {
	t.Helper()
	want := []string{"Auto-Submitted", "Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject", "To"}
	ref := messageID(orig.Header.Get("Message-ID"))
	if ref != "" {
		want = append(want, "In-Reply-To", "References")
	}
	if got := keys(d.header); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("header fields %v, want %v", got, want)
	}
	for _, k := range keys(d.header) {
		if len(d.header[k]) != 1 {
			t.Errorf("%s appears %d times", k, len(d.header[k]))
		}
	}
	from, err := mail.ParseAddress(d.header.Get("From"))
	if err != nil || from.Name != "Mail Delivery System" || from.Address != strings.Trim(o.Account, "<>") {
		t.Errorf("From = %q (%v)", d.header.Get("From"), err)
	}
	to, err := d.header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != parsedAddress(t, orig.From) {
		t.Errorf("To = %q (%v)", d.header.Get("To"), err)
	}
	if got := d.header.Get("Subject"); got != subject {
		t.Errorf("Subject = %q", got)
	}
	if date, err := d.header.Date(); err != nil || !date.Equal(o.Now.Truncate(time.Second)) {
		t.Errorf("Date = %q (%v)", d.header.Get("Date"), err)
	}
	domain := o.MessageIDDomain
	if domain == "" {
		domain = o.ReportingMTA
	}
	if !regexp.MustCompile(`^<[0-9a-f]{32}@` + regexp.QuoteMeta(domain) + `>$`).MatchString(d.header.Get("Message-ID")) {
		t.Errorf("Message-ID = %q", d.header.Get("Message-ID"))
	}
	if d.header.Get("MIME-Version") != "1.0" || d.header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("MIME-Version = %q, Auto-Submitted = %q", d.header.Get("MIME-Version"), d.header.Get("Auto-Submitted"))
	}
	if ref != "" && (d.header.Get("In-Reply-To") != ref || d.header.Get("References") != ref) {
		t.Errorf("In-Reply-To = %q, References = %q, want %q", d.header.Get("In-Reply-To"), d.header.Get("References"), ref)
	}
}

// parsedAddress is an SMTP path (as Build takes it: white space around
// it and angle brackets optional) as net/mail parses it, quotes removed.
func parsedAddress(t *testing.T, path string) string {
	t.Helper()
	path = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(path), "<"), ">")
	a, err := mail.ParseAddress("<" + path + ">")
	if err != nil {
		t.Fatalf("ParseAddress(%q): %v", path, err)
	}
	return a.Address
}

// checkFields compares a block of delivery-status fields with want
// exactly: same names, same values.
func checkFields(t *testing.T, what string, got map[string][]string, want map[string]string) {
	t.Helper()
	if !slices.Equal(keys(got), slices.Sorted(maps.Keys(want))) {
		t.Errorf("%s: fields %v, want %v", what, keys(got), slices.Sorted(maps.Keys(want)))
	}
	for k, v := range want {
		if g := got[k]; len(g) != 1 || g[0] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, g, v)
		}
	}
}

func contains(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("notice lacks %q:\n%s", w, text)
		}
	}
}

func rfcDate(t time.Time) string { return t.Format(time.RFC1123Z) }

func TestBuild(t *testing.T) {
	tests := []struct {
		name     string
		orig     func(*testing.T) Original
		failures []Failure
		opts     func(*Options)
		check    func(*testing.T, *dsn)
	}{
		{
			name:     "provider refused (5xx)",
			failures: []Failure{{Rcpt: "bob@example.org", Reply: gmailNoSuchUser, LastAttempt: tried}},
			check: func(t *testing.T, d *dsn) {
				checkFields(t, "per-message", d.message, map[string]string{
					"Reporting-Mta":         "dns; relay.example.com",
					"X-Oauthrelay-Queue-Id": "Q1234",
					"Arrival-Date":          rfcDate(arrival),
				})
				checkFields(t, "recipient", d.rcpts[0], map[string]string{
					"Final-Recipient":   "rfc822; bob@example.org",
					"Action":            "failed",
					"Status":            "5.1.1",
					"Diagnostic-Code":   "smtp; " + gmailNoSuchUser,
					"Last-Attempt-Date": rfcDate(tried),
				})
				contains(t, d.text, "relay.example.com", "Q1234", "ops@example.com", "Quarterly report",
					"<bob@example.org>", "5.1.1 (no such mailbox)", "The email account that you tried to reach",
					rfcDate(tried), "the recipient below", "header of your message is attached")
				if string(d.headers) != originalHeader {
					t.Errorf("attached header:\n%s\nwant:\n%s", d.headers, originalHeader)
				}
			},
		},
		{
			name: "expired in the queue, never attempted",
			failures: []Failure{{Rcpt: "bob@example.org", Status: "4.4.7",
				Reason: "message expired after 5d in the queue"}},
			check: func(t *testing.T, d *dsn) {
				checkFields(t, "recipient", d.rcpts[0], map[string]string{
					"Final-Recipient": "rfc822; bob@example.org",
					"Action":          "failed",
					"Status":          "4.4.7",
				})
				contains(t, d.text, "4.4.7 (delivery time expired)", "message expired after 5d in the queue", "never")
				if strings.Contains(d.text, "Provider said") {
					t.Error("notice quotes a reply that never came")
				}
			},
		},
		{
			name: "expired after temporary refusals",
			failures: []Failure{{Rcpt: "bob@example.org", Status: "4.4.7", Reply: "451 4.7.0 Temporary server error",
				Reason: "message expired after 5d in the queue", LastAttempt: tried}},
			check: func(t *testing.T, d *dsn) {
				checkFields(t, "recipient", d.rcpts[0], map[string]string{
					"Final-Recipient":   "rfc822; bob@example.org",
					"Action":            "failed",
					"Status":            "4.4.7",
					"Diagnostic-Code":   "smtp; 451 4.7.0 Temporary server error",
					"Last-Attempt-Date": rfcDate(tried),
				})
				contains(t, d.text, "Provider said: 451 4.7.0 Temporary server error", "Reason:")
			},
		},
		{
			name: "several recipients, in order",
			failures: []Failure{
				{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user", LastAttempt: tried},
				{Rcpt: "carol@example.org", Reply: "552 5.2.2 Mailbox full", LastAttempt: tried},
				{Rcpt: "dave@example.net", Status: "4.4.7", Reason: "message expired after 5d in the queue"},
			},
			check: func(t *testing.T, d *dsn) {
				for i, want := range []struct{ rcpt, status string }{
					{"bob@example.org", "5.1.1"}, {"carol@example.org", "5.2.2"}, {"dave@example.net", "4.4.7"},
				} {
					if got := d.rcpts[i].Get("Final-Recipient"); got != "rfc822; "+want.rcpt {
						t.Errorf("block %d: Final-Recipient %q", i+1, got)
					}
					if got := d.rcpts[i].Get("Status"); got != want.status {
						t.Errorf("block %d: Status %q", i+1, got)
					}
				}
				contains(t, d.text, "the 3 recipients below", "<bob@example.org>", "<carol@example.org>",
					"<dave@example.net>", "5.2.2 (mailbox full)")
			},
		},
		{
			name: "ORCPT and ENVID",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.EnvID = "QQ314159"
				return o
			},
			failures: []Failure{
				{Rcpt: "bob@example.org", ORcpt: "rfc822;Robert@Example.org", Reply: "550 5.1.1 No such user"},
				{Rcpt: "joerg@example.de", ORcpt: "UTF-8;jörg@bücher.de", Reply: "550 5.1.1 No such user"},
				{Rcpt: "x400@example.com", ORcpt: "x400;/C=us/ADMD=x/", Reply: "550 5.1.1 No such user"},
			},
			check: func(t *testing.T, d *dsn) {
				if got := d.message.Get("Original-Envelope-Id"); got != "QQ314159" {
					t.Errorf("Original-Envelope-Id = %q", got)
				}
				for i, want := range []string{"rfc822; Robert@Example.org", `utf-8; j\x{F6}rg@b\x{FC}cher.de`, "x400; /C=us/ADMD=x/"} {
					if got := d.rcpts[i].Get("Original-Recipient"); got != want {
						t.Errorf("block %d: Original-Recipient = %q, want %q", i+1, got, want)
					}
				}
				contains(t, d.text, "(originally addressed to Robert@Example.org)", "(originally addressed to jörg@bücher.de)")
			},
		},
		{
			name: "status derived from the reply",
			failures: []Failure{
				{Rcpt: "a@example.org", Reply: "552 5.2.2 Mailbox full"},
				{Rcpt: "b@example.org", Reply: "550 Go away"},
				{Rcpt: "c@example.org", Status: "2.0.0", Reply: "554-5.7.1 policy\r\n554 5.7.1 more"},
				{Rcpt: "d@example.org", Status: "5.1", Reply: "554 4.4.1 class disagrees"},
				{Rcpt: "e@example.org"},
				{Rcpt: "f@example.org", Reply: "250 2.0.0 OK"},
			},
			check: func(t *testing.T, d *dsn) {
				for i, want := range []string{"5.2.2", "5.0.0", "5.7.1", "5.0.0", "5.0.0", "5.0.0"} {
					if got := d.rcpts[i].Get("Status"); got != want {
						t.Errorf("block %d: Status = %q, want %q", i+1, got, want)
					}
				}
				if got := d.rcpts[2].Get("Diagnostic-Code"); got != "smtp; 554-5.7.1 policy 554 5.7.1 more" {
					t.Errorf("multi-line reply: Diagnostic-Code = %q", got)
				}
			},
		},
		{
			name: "non-ASCII addresses, reply and subject",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.From = "jörg@bücher.de"
				o.Header = readHeader(t, "Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_Q1?=\r\n\r\n"+bodySecret)
				return o
			},
			failures: []Failure{{Rcpt: "zoë@exämple.org", Reply: "550 5.1.1 Benutzer unbekannt – Empfänger prüfen"}},
			check: func(t *testing.T, d *dsn) {
				if got := d.rcpts[0].Get("Final-Recipient"); got != `utf-8; zo\x{EB}@ex\x{E4}mple.org` {
					t.Errorf("Final-Recipient = %q", got)
				}
				if got := d.rcpts[0].Get("Diagnostic-Code"); got != `smtp; 550 5.1.1 Benutzer unbekannt \x{2013} Empf\x{E4}nger pr\x{FC}fen` {
					t.Errorf("Diagnostic-Code = %q", got)
				}
				if cte := d.parts[0].header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
					t.Errorf("notice Content-Transfer-Encoding = %q", cte)
				}
				contains(t, d.text, "<zoë@exämple.org>", "Benutzer unbekannt – Empfänger prüfen", "Quartalsbericht für Q1")
			},
		},
		{
			name:     "no header attached when MaxHeaderBytes is negative",
			opts:     func(o *Options) { o.MaxHeaderBytes = -1 },
			failures: []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}},
			check: func(t *testing.T, d *dsn) {
				if len(d.parts) != 2 {
					t.Errorf("%d parts", len(d.parts))
				}
				contains(t, d.text, "not attached")
			},
		},
		{
			name: "no header known",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.Header, o.Arrival, o.QueueID = nil, time.Time{}, ""
				return o
			},
			failures: []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}},
			check: func(t *testing.T, d *dsn) {
				if len(d.parts) != 2 {
					t.Errorf("%d parts", len(d.parts))
				}
				checkFields(t, "per-message", d.message, map[string]string{"Reporting-Mta": "dns; relay.example.com"})
				if strings.Contains(d.text, "Queue ID") || strings.Contains(d.text, " \r\n") {
					t.Errorf("empty details or trailing space in the notice:\n%q", d.text)
				}
			},
		},
		{
			name: "Message-ID domain and quoted sender",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.From = `"john doe"@example.com`
				return o
			},
			opts:     func(o *Options) { o.MessageIDDomain = "bounces.example.com" },
			failures: []Failure{{Rcpt: `"x y"@example.org`, Reply: "550 5.1.1 No such user"}},
			check: func(t *testing.T, d *dsn) {
				if got := d.header.Get("To"); got != `<"john doe"@example.com>` {
					t.Errorf("To = %q", got)
				}
				if got := d.rcpts[0].Get("Final-Recipient"); got != `rfc822; "x y"@example.org` {
					t.Errorf("Final-Recipient = %q", got)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := original(t)
			if tc.orig != nil {
				orig = tc.orig(t)
			}
			o := options()
			if tc.opts != nil {
				tc.opts(&o)
			}
			tc.check(t, build(t, orig, tc.failures, o))
		})
	}
}

// TestBuildInjection feeds CR, LF and NUL through every value that comes
// from outside the relay's configuration: none may add a header field, a
// recipient block or a MIME part.
func TestBuildInjection(t *testing.T) {
	orig := original(t)
	orig.QueueID = "Q1\r\nBcc: victim@example.net"
	orig.EnvID = "id\r\nX-Injected: envid"
	failures := []Failure{{
		Rcpt:   "bob@example.org\r\nBcc: victim@example.net\r\n\r\nFinal-Recipient: rfc822; forged@example.net",
		ORcpt:  "rfc822;bob@example.org\r\nX-Injected: orcpt",
		Status: "5.1.1\r\nX-Injected: status",
		Reply:  "550 5.1.1 no\r\nX-Injected: reply\r\n\r\n--=_bounce_\r\nContent-Type: text/html\x00\r\n\r\n<b>forged part</b>",
		Reason: "reason\x00\r\nX-Injected: reason\x1b[31m",
	}}
	d := build(t, orig, failures, options())
	if len(d.parts) != 3 {
		t.Fatalf("%d parts", len(d.parts))
	}
	for _, h := range append([]map[string][]string{d.header, d.message, d.rcpts[0]}, d.parts[0].header, d.parts[1].header, d.parts[2].header) {
		for k := range h {
			if strings.HasPrefix(k, "X-Injected") || k == "Bcc" {
				t.Errorf("injected field %q", k)
			}
		}
	}
	checkFields(t, "recipient", d.rcpts[0], map[string]string{
		"Original-Recipient": `utf-8; bob@example.org\x{FFFD}\x{FFFD}X-Injected:\x{20}orcpt`,
		"Final-Recipient":    `utf-8; bob@example.org\x{FFFD}\x{FFFD}Bcc:\x{20}victim@example.net\x{FFFD}\x{FFFD}\x{FFFD}\x{FFFD}Final-Recipient:\x{20}rfc822;\x{20}forged@example.net`,
		"Action":             "failed",
		"Status":             "5.1.1",
		"Diagnostic-Code":    "smtp; 550 5.1.1 no X-Injected: reply --=_bounce_ Content-Type: text/html <b>forged part</b>",
	})
	if got := d.message.Get("X-Oauthrelay-Queue-Id"); got != "Q1 Bcc: victim@example.net" {
		t.Errorf("queue ID field = %q", got)
	}
	if got := d.message.Get("Original-Envelope-Id"); got != "id+0D+0AX-Injected:+20envid" {
		t.Errorf("Original-Envelope-Id = %q", got)
	}
	if strings.ContainsAny(d.text, "\x00\x1b") || strings.Contains(d.text, "reply\r\n") {
		t.Errorf("control characters reached the notice:\n%q", d.text)
	}
}

// TestBuildHeaderCap: a header section beyond MaxHeaderBytes is cut at a
// field boundary, never inside a (folded) field.
func TestBuildHeaderCap(t *testing.T) {
	var section strings.Builder
	for i := 0; section.Len() < 200<<10; i++ {
		section.WriteString("X-Filler: " + strings.Repeat("f", i%50) + "\r\n")
		if i%7 == 0 {
			section.WriteString("X-Folded: first line\r\n\tsecond line\r\n\tthird line\r\n")
		}
	}
	for _, max := range []int{0, 1000, 4096, 4097, 4098, 50} {
		orig := original(t)
		orig.Header = readHeader(t, section.String()+"\r\n"+bodySecret)
		o := options()
		o.MaxHeaderBytes = max
		d := build(t, orig, []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}}, o)
		limit := max
		if max == 0 {
			limit = defaultMaxHeaderBytes
		}
		if limit < len("X-Filler: \r\n") {
			if d.headers != nil {
				t.Errorf("max %d: a part of %d bytes attached", max, len(d.headers))
			}
			contains(t, d.text, "not attached")
			continue
		}
		got := string(d.headers)
		if len(got) > limit || len(got) < limit-200 {
			t.Errorf("max %d: attached %d bytes", max, len(got))
		}
		if !strings.HasPrefix(section.String(), got) {
			t.Fatalf("max %d: the attached header is not a prefix of the original", max)
		}
		if rest := section.String()[len(got):]; rest[0] == '\t' || rest[0] == ' ' {
			t.Errorf("max %d: cut inside a folded field: next line %q", max, rest[:20])
		}
		contains(t, d.text, "The first "+strconv.Itoa(len(got))+" bytes of your message's header")
	}
}

// TestBuildOriginalForms: header sections as they come — LF line endings,
// no separator before EOF, body text without a separator, lines beyond
// 998 octets, 8-bit bytes.
func TestBuildOriginalForms(t *testing.T) {
	long := "X-Long: " + strings.Repeat("y", 1500)
	tests := []struct {
		name, message, attached, cte string
	}{
		{"LF line endings", "Subject: hi\nFrom: a@example.com\n\n" + bodySecret + "\n",
			"Subject: hi\r\nFrom: a@example.com\r\n", "7bit"},
		{"no separator, ends with the header", "Subject: hi\r\nFrom: a@example.com",
			"Subject: hi\r\nFrom: a@example.com\r\n", "7bit"},
		{"no separator before the body", "Subject: hi\r\n" + bodySecret + "\r\nX-Looks-Like: a field\r\n",
			"Subject: hi\r\n", "7bit"},
		{"body only", bodySecret + "\r\nSubject: not a header\r\n", "", ""},
		{"continuation without a field", "\tindented: text\r\nSubject: x\r\n", "", ""},
		{"over-long line", long + "\r\nSubject: x\r\n\r\n" + bodySecret,
			long + "\r\nSubject: x\r\n", "quoted-printable"},
		{"8-bit and control bytes", "Subject: f\xfcr dich\r\nX-Nul: a\x00b\r\n\r\n" + bodySecret,
			"Subject: f\xfcr dich\r\nX-Nul: a\x00b\r\n", "quoted-printable"},
		{"lone CR inside a field", "Subject: a\rb\r\nTo: c\r\n\r\n" + bodySecret,
			"Subject: a\rb\r\nTo: c\r\n", "quoted-printable"},
		{"trailing white space", "Subject: a \r\nTo: c\t\r\n\r\n" + bodySecret,
			"Subject: a \r\nTo: c\t\r\n", "7bit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := original(t)
			orig.Header = readHeader(t, tc.message)
			d := build(t, orig, []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}}, options())
			if string(d.headers) != tc.attached {
				t.Errorf("attached %q, want %q", d.headers, tc.attached)
			}
			if tc.attached == "" {
				if len(d.parts) != 2 {
					t.Errorf("%d parts", len(d.parts))
				}
				return
			}
			if cte := d.parts[2].header.Get("Content-Transfer-Encoding"); cte != tc.cte {
				t.Errorf("Content-Transfer-Encoding %q, want %q", cte, tc.cte)
			}
		})
	}
}

// TestBuildLongValues: values far beyond what SMTP allows still give lines
// within 998 octets, and folding loses no word.
func TestBuildLongValues(t *testing.T) {
	words := strings.Repeat("word ", 800)
	blob := strings.Repeat("z", 2500)
	failures := []Failure{
		{Rcpt: "bob@example.org", Reply: "550 5.1.1 " + words, Reason: words},
		{Rcpt: "carol@example.org", Reply: "550 5.1.1 " + blob, Reason: blob},
	}
	d := build(t, original(t), failures, options())
	if got := d.rcpts[0].Get("Diagnostic-Code"); got != "smtp; 550 5.1.1 "+strings.TrimSpace(words) {
		t.Errorf("folded Diagnostic-Code changed: %d bytes", len(got))
	}
	if got := strings.ReplaceAll(d.rcpts[1].Get("Diagnostic-Code"), " ", ""); got != "smtp;5505.1.1"+blob {
		t.Errorf("split Diagnostic-Code lost characters: %d bytes", len(got))
	}
}

func TestBuildErrors(t *testing.T) {
	ok := []Failure{{Rcpt: "bob@example.org", Reply: "550 5.1.1 No such user"}}
	tests := []struct {
		name     string
		change   func(*Original, *Options)
		failures []Failure
	}{
		{"null sender", func(o *Original, _ *Options) { o.From = "" }, ok},
		{"null sender in brackets", func(o *Original, _ *Options) { o.From = "<>" }, ok},
		{"sender with CRLF", func(o *Original, _ *Options) { o.From = "alice@example.com\r\nBcc: x@example.net" }, ok},
		{"sender with two addresses", func(o *Original, _ *Options) { o.From = "alice@example.com>, <x@example.net" }, ok},
		{"sender without domain", func(o *Original, _ *Options) { o.From = "alice" }, ok},
		{"sender too long", func(o *Original, _ *Options) { o.From = strings.Repeat("a", 250) + "@example.com" }, ok},
		{"no reporting MTA", func(_ *Original, p *Options) { p.ReportingMTA = "" }, ok},
		{"reporting MTA with a space", func(_ *Original, p *Options) { p.ReportingMTA = "relay example.com" }, ok},
		{"reporting MTA with CRLF", func(_ *Original, p *Options) { p.ReportingMTA = "relay\r\nX: y" }, ok},
		{"Message-ID domain not a host", func(_ *Original, p *Options) { p.MessageIDDomain = "a>b" }, ok},
		{"no account", func(_ *Original, p *Options) { p.Account = "" }, ok},
		{"account not an address", func(_ *Original, p *Options) { p.Account = "ops" }, ok},
		{"no failures", func(*Original, *Options) {}, nil},
		{"failure without recipient", func(*Original, *Options) {}, []Failure{{Reply: "550 5.1.1 x"}}},
		{"randomness fails", func(_ *Original, p *Options) { p.Rand = failingReader{} }, ok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig, o := original(t), options()
			tc.change(&orig, &o)
			if out, err := Build(orig, tc.failures, o); err == nil {
				t.Errorf("Build succeeded:\n%s", out)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

// TestBuildDefaults: a zero Now is the current time, MaxHeaderBytes 0 is
// 64 KiB, and without Rand two notifications differ in Message-ID and
// boundary.
func TestBuildDefaults(t *testing.T) {
	o := options()
	o.Now, o.Rand = time.Time{}, nil
	before := time.Now().Truncate(time.Second)
	a, err := Build(original(t), []Failure{{Rcpt: "bob@example.org"}}, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(original(t), []Failure{{Rcpt: "bob@example.org"}}, o)
	if err != nil {
		t.Fatal(err)
	}
	da, err := parseDSN(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := parseDSN(b)
	if err != nil {
		t.Fatal(err)
	}
	if date, _ := da.header.Date(); date.Before(before) {
		t.Errorf("Date %v is before the call (%v)", date, before)
	}
	if da.header.Get("Message-ID") == db.header.Get("Message-ID") {
		t.Error("two notifications share a Message-ID")
	}
	if da.header.Get("Content-Type") == db.header.Get("Content-Type") {
		t.Error("two notifications share a boundary")
	}
}

// TestBuildReferences: the original's Message-ID is referred to only when
// it is a plain msg-id.
func TestBuildReferences(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"<report-42@example.com>", "<report-42@example.com>"},
		{"  <a.b+c@[10.0.0.1]>  ", "<a.b+c@[10.0.0.1]>"},
		{"<no-at-sign>", ""},
		{"<a b@example.com>", ""},
		{"<a@example.com> <b@example.com>", ""},
		{"report-42@example.com", ""},
		{"<" + strings.Repeat("x", 300) + "@example.com>", ""},
	} {
		orig := original(t)
		orig.Header = readHeader(t, "Message-ID: "+tc.id+"\r\n\r\n")
		d := build(t, orig, []Failure{{Rcpt: "bob@example.org"}}, options())
		if got := d.header.Get("In-Reply-To"); got != tc.want {
			t.Errorf("Message-ID %q: In-Reply-To %q, want %q", tc.id, got, tc.want)
		}
	}
}
