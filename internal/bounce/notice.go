package bounce

import (
	"bytes"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"
)

// attachment says what of the original's header the report carries.
type attachment struct {
	size int  // bytes attached; 0 for none
	cut  bool // fields were left out
}

// labelWidth aligns the values of "Label: value" lines.
const labelWidth = 15

// textWidth is where the notice wraps: within quoted-printable's 76
// characters (RFC 2045 §6.7), so that ASCII lines need no soft breaks.
const textWidth = 72

// noticePart is the human-readable first part (RFC 6522 §3): who reports,
// what failed and why, in plain words for the sender and for the
// operator the sender may forward it to.
func noticePart(act string, orig Original, failures []Failure, o Options, att attachment) part {
	var b strings.Builder
	para(&b, "", "", fmt.Sprintf("This is the mail relay at %s, reporting on a message you sent.", o.ReportingMTA))
	b.WriteString("\r\n")
	para(&b, "", "", summary(act, len(failures)))
	b.WriteString("\r\n")
	writeMessageDetails(&b, orig, o)
	for _, f := range failures {
		b.WriteString("\r\n")
		writeFailure(&b, f)
	}
	b.WriteString("\r\n")
	para(&b, "", "", attachmentNote(att)+" If you need help, forward this report to the administrator of the mail relay.")
	return textPart(b.String())
}

// summary says in one paragraph what the notification reports.
func summary(act string, n int) string {
	switch act {
	case ActionDelayed:
		return fmt.Sprintf("Your message has not yet been delivered to %s. This is a warning only: the relay keeps trying until the time shown, and you need not send the message again.", count(n))
	case ActionRelayed:
		return fmt.Sprintf("Your message was handed to the mail provider for %s. You asked to be told of its delivery, but the provider sends no such notifications, so this report is the last you will hear of it unless it fails later.", count(n))
	}
	return fmt.Sprintf("Your message could not be delivered to %s. The failure is permanent: the relay will not try again.", count(n))
}

func count(n int) string {
	if n == 1 {
		return "the recipient below"
	}
	return fmt.Sprintf("the %d recipients below", n)
}

func writeMessageDetails(b *strings.Builder, orig Original, o Options) {
	if id := cleanText(orig.QueueID, 256); id != "" {
		labelled(b, "    ", "Queue ID:", id)
	}
	labelled(b, "    ", "Account:", strings.Trim(o.Account, "<>"))
	if !orig.Arrival.IsZero() {
		labelled(b, "    ", "Received:", orig.Arrival.Format(time.RFC1123Z))
	}
	if s := orig.Header.Get("Subject"); s != "" {
		labelled(b, "    ", "Subject:", cleanText(decodeWords(s), maxSubject))
	}
}

func writeFailure(b *strings.Builder, f Failure) {
	who := "<" + cleanText(f.Rcpt, 512) + ">"
	if orcpt := originalAddress(f.ORcpt); orcpt != "" && orcpt != f.Rcpt {
		who += " (originally addressed to " + cleanText(orcpt, 512) + ")"
	}
	para(b, "", "", who)
	code := status(f)
	meaning := statusMeaning(code)
	if code[0] == '2' {
		meaning = "relayed"
	}
	labelled(b, "    ", "Status:", code+" ("+meaning+")")
	if f.Reason != "" {
		labelled(b, "    ", "Reason:", cleanText(f.Reason, maxReason))
	}
	if f.Reply != "" {
		labelled(b, "    ", "Provider said:", cleanText(f.Reply, maxReply))
	}
	last := "never (the provider was not reached)"
	if !f.LastAttempt.IsZero() {
		last = f.LastAttempt.Format(time.RFC1123Z)
	}
	labelled(b, "    ", "Last attempt:", last)
	if actionOf(f) == ActionDelayed && !f.WillRetryUntil.IsZero() {
		labelled(b, "    ", "Retrying until:", f.WillRetryUntil.Format(time.RFC1123Z))
	}
}

func attachmentNote(att attachment) string {
	switch {
	case att.size == 0:
		return "Your message is not attached, neither its header nor its body."
	case att.cut:
		return fmt.Sprintf("The first %d bytes of your message's header are attached below; the rest of the header and the body are not.", att.size)
	default:
		return "The header of your message is attached below; its body is not, for privacy."
	}
}

// originalAddress returns the address of an ORCPT value ("type;addr").
func originalAddress(orcpt string) string {
	if _, addr, ok := strings.Cut(orcpt, ";"); ok {
		return strings.TrimSpace(addr)
	}
	return strings.TrimSpace(orcpt)
}

// decodeWords decodes RFC 2047 encoded words (UTF-8, ISO-8859-1 and
// US-ASCII); a value it cannot decode is shown as it is.
func decodeWords(s string) string {
	if d, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// labelled writes "Label: value" with value wrapped under itself.
func labelled(b *strings.Builder, indent, label, value string) {
	first := indent + label + strings.Repeat(" ", max(1, labelWidth-len(label)))
	para(b, first, indent+strings.Repeat(" ", labelWidth), value)
}

// para writes text wrapped at textWidth characters: the first line starts
// with first, the others with rest. A word too long for any line is split
// at a character boundary so that no line exceeds maxLine octets.
func para(b *strings.Builder, first, rest, text string) {
	line, empty := first, true
	for _, word := range splitLong(strings.Fields(text), maxLine-len(rest)-1) {
		if !empty && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > textWidth {
			b.WriteString(line + "\r\n")
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	b.WriteString(line + "\r\n")
}

// splitLong splits every word longer than max bytes at character
// boundaries.
func splitLong(words []string, max int) []string {
	var out []string
	for _, w := range words {
		for len(w) > max {
			cut := max
			for cut > 0 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			out = append(out, w[:cut])
			w = w[cut:]
		}
		out = append(out, w)
	}
	return out
}

// textPart returns the notice as text/plain in UTF-8: 7bit when it is
// ASCII, quoted-printable otherwise, so the notification needs no
// 8BITMIME on its way.
func textPart(text string) part {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Description", "Notification")
	if isASCII(text) {
		h.Set("Content-Transfer-Encoding", "7bit")
		return part{header: h, body: []byte(text)}
	}
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	return part{header: h, body: quotedPrintable([]byte(text))}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// quotedPrintable encodes text whose lines end in CRLF line by line: the
// line breaks stay hard breaks, and a CR or LF inside a line (possible in
// a broken original header) is encoded as such rather than taken for a
// line break, so the part decodes to exactly text.
func quotedPrintable(text []byte) []byte {
	var buf bytes.Buffer
	for _, line := range bytes.SplitAfter(text, []byte("\r\n")) {
		content, ok := bytes.CutSuffix(line, []byte("\r\n"))
		w := quotedprintable.NewWriter(&buf)
		w.Binary = true
		w.Write(content) // writes to a bytes.Buffer do not fail
		w.Close()
		if ok {
			buf.WriteString("\r\n")
		}
	}
	return buf.Bytes()
}
