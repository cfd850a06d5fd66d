package bounce

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line lengths: RFC 5322 §2.1.1 — at most 998 octets before CRLF, and
// lines of 78 characters or less are preferred.
const (
	maxLine  = 998
	softLine = 78
)

// Text taken from outside the relay (provider replies, addresses, header
// values) is bounded before it is written.
const (
	maxReply   = 4096
	maxReason  = 1024
	maxSubject = 200
)

// cleanText makes text from outside the relay safe for the human-readable
// part: every run of control characters (CR, LF, NUL, TAB, DEL, C1 and
// Unicode format characters such as bidirectional overrides, which could
// disguise the text) and white space becomes a single space, invalid UTF-8
// becomes U+FFFD, and the result is cut to max bytes at a character
// boundary.
func cleanText(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r <= ' ' || r == 0x7f || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r) // an invalid byte arrives as utf8.RuneError, written as U+FFFD
	}
	return truncate(b.String(), max)
}

// truncate cuts s to at most max bytes at a character boundary, marking
// the cut with "...".
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// asciiText makes text printable US-ASCII for the fields of a
// message/delivery-status part (RFC 3464 §2.1.1: *text is US-ASCII):
// cleanText first, then every non-ASCII character written as \x{HEX}, the
// escape RFC 6533 §3 defines for the same purpose.
func asciiText(s string, max int) string {
	s = cleanText(s, max)
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\x{%X}`, r)
	}
	return b.String()
}

// isPrintableASCII reports whether s is non-empty and only printable
// US-ASCII and spaces.
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

// recipientField formats an address for Final-Recipient and
// Original-Recipient (RFC 3464 §2.3.1, §2.3.2): "rfc822; addr" when addr
// is printable ASCII, otherwise the "utf-8" address type of RFC 6533 §3
// in its 7-bit form (utf-8-addr-xtext), which a message/delivery-status
// part can carry. Control characters and invalid UTF-8, which no accepted
// address contains, come out as \x{FFFD}.
func recipientField(addr string) string {
	if isPrintableASCII(addr) {
		return "rfc822; " + addr
	}
	return "utf-8; " + utf8AddrXtext(addr)
}

// utf8AddrXtext encodes an address as RFC 6533's utf-8-addr-xtext: QCHAR
// (printable ASCII but '+', '=' and '\') as is, everything else as
// \x{HEX} with upper-case digits and no leading zeros.
func utf8AddrXtext(addr string) string {
	var b strings.Builder
	for _, r := range addr {
		switch {
		case r > ' ' && r < 0x7f && r != '+' && r != '=' && r != '\\':
			b.WriteRune(r)
		case r < ' ' || r == 0x7f || unicode.IsControl(r):
			b.WriteString(`\x{FFFD}`)
		default:
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return b.String()
}

// envIDField formats an envelope identifier for Original-Envelope-Id
// (RFC 3464 §2.2.1): as given when it is printable ASCII without spaces,
// which go-smtp guarantees for a decoded ENVID; otherwise xtext-encoded
// (RFC 3461 §4), the form the identifier had on the wire.
func envIDField(id string) string {
	if isPrintableASCII(id) && !strings.Contains(id, " ") {
		return id
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c > ' ' && c < 0x7f && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "+%02X", c)
	}
	return b.String()
}

// foldField writes "Name: value" folded at spaces (RFC 5322 §2.2.3) into
// lines of softLine characters where the words allow. A word longer than a
// line may hold is split with an inserted fold; that adds a space when the
// field is unfolded, which only happens to values far beyond what the
// protocols allow. value must be printable ASCII.
func foldField(b *strings.Builder, name, value string) {
	line, words := name+":", 0
	for _, chunk := range chunks(strings.Fields(value), maxLine-1) {
		n := len(line) + 1 + len(chunk)
		if n > softLine && (words > 0 || n > maxLine) {
			b.WriteString(line + "\r\n")
			line, words = "", 0
		}
		line += " " + chunk
		words++
	}
	b.WriteString(line + "\r\n")
}

// chunks returns words with every word longer than max split into pieces
// of max bytes.
func chunks(words []string, max int) []string {
	var out []string
	for _, w := range words {
		for len(w) > max {
			out = append(out, w[:max])
			w = w[max:]
		}
		out = append(out, w)
	}
	return out
}
