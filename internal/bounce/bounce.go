// Package bounce builds the delivery-status notifications (DSNs, RFC 3464)
// that the durable queue sends when recipients of a message fail for good:
// the provider refused them with a 5xx, or the message outlived the
// queue's max_lifetime. On the sender's request (RFC 3461 NOTIFY) it also
// builds "delayed" and "relayed" ones. Postfix's bounces are the model for
// layout and content.
//
// The relay can only send as one of its accounts, so a notification comes
// from the account that tried to deliver the original and goes, through
// that account, to the original envelope sender.
//
// A notification is a multipart/report (RFC 6522) of three parts: a
// human-readable explanation (text/plain, UTF-8), the machine-readable
// report (message/delivery-status, RFC 3464) and the header section of the
// original (text/rfc822-headers) — never its body: bodies are the most
// sensitive data the relay holds, so RET=FULL (RFC 3461 §4.3, a request)
// is answered with the header section as RET=HDRS is. The message is marked Auto-Submitted:
// auto-replied (RFC 3834 §5) and Eligible refuses to answer null senders,
// reports and automatic mail, so notifications cannot loop.
package bounce

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"
)

// Actions a notification reports (RFC 3464 §2.3.3). One notification
// reports one action for all its recipients.
const (
	ActionFailed  = "failed"  // the recipient failed for good (the default)
	ActionDelayed = "delayed" // not delivered yet; the relay keeps trying
	ActionRelayed = "relayed" // handed to a provider that sends no DSN itself
)

// Failure is one recipient a notification reports: one that failed for
// good, or (Action) one that is delayed or was relayed.
type Failure struct {
	// Action is ActionFailed (""), ActionDelayed or ActionRelayed.
	Action string
	// WillRetryUntil, for a delayed recipient, is when the relay gives
	// up (RFC 3464 §2.3.7); zero for none.
	WillRetryUntil time.Time
	// Rcpt is the recipient as sent to the provider (SMTP path form,
	// without angle brackets).
	Rcpt string
	// ORcpt is the DSN ORCPT parameter (RFC 3461 §4.2) as go-smtp hands
	// it over, address type and decoded address: "rfc822;addr" or
	// "utf-8;addr"; "" when the client gave none.
	ORcpt string
	// Status is the enhanced status code (RFC 3463): "4.4.7" when the
	// message expired; "" takes the code of Reply (5.0.0 without one).
	Status string
	// Reply is the provider's last reply about this recipient, one line
	// as transport.ReplyText writes it ("550 5.1.1 No such user"); ""
	// when the provider never answered. It
	// becomes the Diagnostic-Code (RFC 3464 §2.3.6), which carries
	// replies of the remote system only.
	Reply string
	// Reason is the relay's own explanation when it gave up rather than
	// the provider ("message expired after 5d in the queue"). It is shown
	// in the human-readable part only.
	Reason string
	// LastAttempt is when delivery to this recipient was last tried;
	// zero when it never was.
	LastAttempt time.Time
}

// Original describes the message that failed.
type Original struct {
	QueueID string
	// From is the envelope sender (SMTP path form, without angle
	// brackets): the notification's recipient.
	From    string
	Arrival time.Time
	// EnvID is the DSN ENVID parameter (RFC 3461 §4.4), decoded as
	// go-smtp hands it over; "" when none.
	EnvID string
	// Header is the original's header section, from ReadHeader; nil to
	// attach none.
	Header *Header
}

// Options are the relay's side of a notification.
type Options struct {
	// ReportingMTA is the relay's host name (Reporting-MTA: dns; name).
	ReportingMTA string
	// Account is the address the notification is sent from and through.
	Account string
	// MaxHeaderBytes caps the original's header section attached, cut at
	// a field boundary: 0 means 64 KiB, a negative value attaches none.
	MaxHeaderBytes int
	// Now is the notification's date; zero means time.Now().
	Now time.Time
	// MessageIDDomain is the right-hand side of the Message-ID; ""
	// means ReportingMTA.
	MessageIDDomain string
	// Rand supplies the Message-ID and the MIME boundary; nil means
	// crypto/rand. Tests inject a fixed source for reproducible output.
	Rand io.Reader
}

// defaultMaxHeaderBytes is the default of Options.MaxHeaderBytes.
const defaultMaxHeaderBytes = 64 << 10

// subjects are the notifications' subjects by action, the ones Postfix
// uses, which people and filters recognise.
var subjects = map[string]string{
	ActionFailed:  "Undelivered Mail Returned to Sender",
	ActionDelayed: "Delayed Mail (still being retried)",
	ActionRelayed: "Successful Mail Delivery Report",
}

// action is the action all failures report; "" when they disagree or
// one is unknown.
func action(failures []Failure) string {
	act := ""
	for i, f := range failures {
		a := f.Action
		if a == "" {
			a = ActionFailed
		}
		if _, ok := subjects[a]; !ok || i > 0 && a != act {
			return ""
		}
		act = a
	}
	return act
}

// displayName is the notification's From display name.
const displayName = "Mail Delivery System"

// Build returns a complete notification about failures of orig: an RFC
// 5322 message with CRLF line endings, every line within 998 octets, in
// 7-bit MIME (quoted-printable where a part has 8-bit text), ready to send
// from and through opts.Account to orig.From. The one exception to 7 bits
// is a sender address in UTF-8, written as is in To (RFC 6532): mail to
// such an address needs SMTPUTF8 anyway. Build uses nothing of the
// original but the header section orig.Header holds.
//
// Build returns an error for options it cannot write, a sender it cannot
// address and an empty list of failures; whether a notification should
// be sent at all is Eligible's question.
func Build(orig Original, failures []Failure, opts Options) ([]byte, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	to, err := headerAddress(orig.From)
	if err != nil {
		return nil, fmt.Errorf("bounce: sender: %w", err)
	}
	if len(failures) == 0 {
		return nil, errors.New("bounce: no failed recipient to report")
	}
	for i, f := range failures {
		if strings.TrimSpace(f.Rcpt) == "" {
			return nil, fmt.Errorf("bounce: failure %d has no recipient", i)
		}
	}
	act := action(failures)
	if act == "" {
		return nil, errors.New("bounce: one notification reports one known action for all its recipients")
	}
	var headers []byte
	var cut bool
	if o.MaxHeaderBytes > 0 {
		headers, cut = orig.Header.section(o.MaxHeaderBytes)
	}
	parts := []part{
		noticePart(act, orig, failures, o, attachment{size: len(headers), cut: cut}),
		reportPart(orig, failures, o),
	}
	if len(headers) > 0 {
		parts = append(parts, headersPart(headers))
	}
	return assemble(orig, to, subjects[act], parts, o)
}

// resolve fills in defaults and checks what will be written into headers.
func (o Options) resolve() (Options, error) {
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.MessageIDDomain == "" {
		o.MessageIDDomain = o.ReportingMTA
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if !validHostname(o.ReportingMTA) {
		return o, fmt.Errorf("bounce: reporting MTA %q is not a host name", o.ReportingMTA)
	}
	if !validHostname(o.MessageIDDomain) {
		return o, fmt.Errorf("bounce: Message-ID domain %q is not a host name", o.MessageIDDomain)
	}
	acct, err := headerAddress(o.Account)
	if err != nil {
		return o, fmt.Errorf("bounce: account: %w", err)
	}
	o.Account = acct
	return o, nil
}

// validHostname accepts an ASCII host name: dot-separated labels of
// letters, digits, '-' and '_'.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Address errors.
var (
	errNullSender = errors.New("the null reverse-path cannot receive a notification")
	errAddress    = errors.New("not an address that can be written in a header field")
)

// headerAddress checks an SMTP path (with or without angle brackets) and
// returns it as an RFC 5322 angle-addr, quoted where needed. UTF-8 stays
// as is (RFC 6532): such an address needs SMTPUTF8 on the way anyway.
// Control characters, invalid UTF-8, anything net/mail cannot parse as
// exactly one address and paths beyond RFC 5321's 256 octets are refused:
// nothing written from them could break out of its header field.
func headerAddress(path string) (string, error) {
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(path), "<"), ">")
	if addr == "" {
		return "", errNullSender
	}
	if len(addr) > 254 || !utf8.ValidString(addr) || strings.ContainsFunc(addr, isControl) {
		return "", errAddress
	}
	a, err := mail.ParseAddress("<" + addr + ">")
	if err != nil {
		return "", errAddress
	}
	return (&mail.Address{Address: a.Address}).String(), nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 }

// part is one body part of the report.
type part struct {
	header textproto.MIMEHeader
	body   []byte
}

// assemble writes the message header and the multipart/report body.
func assemble(orig Original, to, subject string, parts []part, o Options) ([]byte, error) {
	boundary, err := pickBoundary(o.Rand, parts)
	if err != nil {
		return nil, err
	}
	id, err := randomHex(o.Rand, 16)
	if err != nil {
		return nil, fmt.Errorf("bounce: Message-ID: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s %s\r\n", displayName, o.Account)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", o.Now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", id, o.MessageIDDomain)
	if ref := messageID(orig.Header.Get("Message-ID")); ref != "" {
		// RFC 3834 §3.1: an automatic response refers to its subject.
		fmt.Fprintf(&b, "In-Reply-To: %s\r\nReferences: %s\r\n", ref, ref)
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	b.WriteString("\r\n")
	b.WriteString("This is a delivery status notification in MIME format (RFC 3464).\r\n")
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(boundary); err != nil {
		return nil, fmt.Errorf("bounce: boundary: %w", err)
	}
	for _, p := range parts {
		pw, err := w.CreatePart(p.header)
		if err != nil {
			return nil, err
		}
		if _, err := pw.Write(p.body); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// pickBoundary returns a random boundary that occurs in no part. "=_"
// cannot occur in quoted-printable text at all (RFC 2045 §6.7), and the
// check covers the rest.
func pickBoundary(r io.Reader, parts []part) (string, error) {
	for range 8 {
		h, err := randomHex(r, 12)
		if err != nil {
			return "", fmt.Errorf("bounce: boundary: %w", err)
		}
		boundary := "=_bounce_" + h
		if !inParts(parts, boundary) {
			return boundary, nil
		}
	}
	return "", errors.New("bounce: no boundary absent from the parts")
}

func inParts(parts []part, s string) bool {
	for _, p := range parts {
		if bytes.Contains(p.body, []byte(s)) {
			return true
		}
	}
	return false
}

func randomHex(r io.Reader, n int) (string, error) {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf), nil
}

// messageID returns v when it is a single plain msg-id (RFC 5322 §3.6.4),
// printable ASCII in angle brackets with an '@', short enough to repeat
// safely; otherwise "".
func messageID(v string) string {
	if len(v) < 5 || len(v) > 250 || v[0] != '<' || v[len(v)-1] != '>' {
		return ""
	}
	inner := v[1 : len(v)-1]
	if !strings.Contains(inner, "@") || strings.ContainsAny(inner, "<> ") || !isPrintableASCII(inner) {
		return ""
	}
	return v
}
