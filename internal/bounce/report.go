package bounce

import (
	"net/textproto"
	"strings"
	"time"
)

// queueIDField is an extension field (RFC 3464 §2.4) naming the message in
// the relay's logs and history, as Postfix's X-Postfix-Queue-ID does.
const queueIDField = "X-Oauthrelay-Queue-ID"

// reportPart is the message/delivery-status part (RFC 3464 §2.1): the
// per-message fields, then one block of per-recipient fields for each
// failure, blocks separated by empty lines. Every value is printable
// US-ASCII (see asciiText and recipientField), folded within 998 octets.
func reportPart(orig Original, failures []Failure, o Options) part {
	var b strings.Builder
	foldField(&b, "Reporting-MTA", "dns; "+o.ReportingMTA)
	if orig.QueueID != "" {
		foldField(&b, queueIDField, asciiText(orig.QueueID, 256))
	}
	if orig.EnvID != "" {
		foldField(&b, "Original-Envelope-Id", envIDField(orig.EnvID))
	}
	if !orig.Arrival.IsZero() {
		foldField(&b, "Arrival-Date", orig.Arrival.Format(time.RFC1123Z))
	}
	for _, f := range failures {
		b.WriteString("\r\n")
		writeRecipientFields(&b, f)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "message/delivery-status")
	h.Set("Content-Description", "Delivery report")
	return part{header: h, body: []byte(b.String())}
}

// writeRecipientFields writes the per-recipient fields of RFC 3464 §2.3 in
// its order. Diagnostic-Code carries the provider's reply only (§2.3.6:
// the diagnostic of the remote MTA); an expiry without any reply has none.
func writeRecipientFields(b *strings.Builder, f Failure) {
	if f.ORcpt != "" {
		foldField(b, "Original-Recipient", originalRecipientField(f.ORcpt))
	}
	foldField(b, "Final-Recipient", recipientField(strings.TrimSpace(f.Rcpt)))
	foldField(b, "Action", actionOf(f))
	foldField(b, "Status", status(f))
	if reply := asciiText(f.Reply, maxReply); reply != "" {
		foldField(b, "Diagnostic-Code", "smtp; "+reply)
	}
	if !f.LastAttempt.IsZero() {
		foldField(b, "Last-Attempt-Date", f.LastAttempt.Format(time.RFC1123Z))
	}
	if actionOf(f) == ActionDelayed && !f.WillRetryUntil.IsZero() {
		foldField(b, "Will-Retry-Until", f.WillRetryUntil.Format(time.RFC1123Z))
	}
}

func actionOf(f Failure) string {
	if f.Action == "" {
		return ActionFailed
	}
	return f.Action
}

// originalRecipientField formats an ORCPT value ("type;address", decoded)
// for Original-Recipient (RFC 3461 §6.3 (d): taken from the parameter).
// rfc822 and utf-8 addresses are written as recipientField writes them
// (rfc822 when printable ASCII, else RFC 6533's utf-8 form); any other
// address type keeps its name, its address made printable ASCII. A value
// without a type is taken as an rfc822 address.
func originalRecipientField(orcpt string) string {
	typ, addr, ok := strings.Cut(orcpt, ";")
	if !ok {
		typ, addr = "rfc822", orcpt
	}
	typ, addr = strings.ToLower(strings.TrimSpace(typ)), strings.TrimSpace(addr)
	if typ == "rfc822" || typ == "utf-8" || !isAtom(typ) {
		return recipientField(addr)
	}
	return typ + "; " + strings.ReplaceAll(asciiText(addr, 512), " ", `\x{20}`)
}

// isAtom reports whether s is a plain address-type name: letters, digits
// and '-' (the names in IANA's address type registry).
func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

// headersPart is the text/rfc822-headers part (RFC 6522 §4): the header
// section as received, in 7bit when it is printable ASCII with lines
// within limits, else in quoted-printable, which RFC 6522 allows for
// headers that are not 7-bit clean.
func headersPart(section []byte) part {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "text/rfc822-headers")
	h.Set("Content-Description", "Header of the undelivered message")
	if clean7bit(section) {
		h.Set("Content-Transfer-Encoding", "7bit")
		return part{header: h, body: section}
	}
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	return part{header: h, body: quotedPrintable(section)}
}

// clean7bit reports whether every line of text (CRLF-terminated) is
// printable ASCII or tabs and at most maxLine octets long.
func clean7bit(text []byte) bool {
	for _, line := range strings.SplitAfter(string(text), "\r\n") {
		line = strings.TrimSuffix(line, "\r\n")
		if len(line) > maxLine {
			return false
		}
		for i := 0; i < len(line); i++ {
			if c := line[i]; (c < ' ' && c != '\t') || c > '~' {
				return false
			}
		}
	}
	return true
}
