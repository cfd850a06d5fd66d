// Package sendas rewrites a message's header section so that it leaves as
// one account (a client's send_as, README "Devices"): devices such as
// scanners write whatever From they were set up with, and providers only
// send as the authenticated mailbox.
//
// Only the From field's address changes: display names, comments,
// encoded-words (RFC 2047) and folding are kept byte for byte, so any
// charset survives. The original address goes to Reply-To, so replies
// still reach the person or device the message came from.
package sendas

import (
	"bytes"
	"net/mail"
	"strings"
)

// Result says what Rewrite changed.
type Result struct {
	// Original lists the valid addresses of the message's From field(s),
	// as written (for the log).
	Original []string
	// FromAdded: the message had no From field; one was added.
	FromAdded bool
	// ReplyTo: a Reply-To field with the original From mailboxes was added.
	ReplyTo bool
	// Removed counts the fields dropped: From fields after the first and
	// Sender fields (the account is now the author and the transmitter).
	Removed int
}

// Rewrite rewrites the start of a message (head: the bytes read so far,
// which hold the whole header section when complete is true) so that its
// From is account, and returns the new start of the message. The header
// section ends at the first empty line, or at the first line that is not
// a header field (a body without a separating empty line: one is then
// inserted), or at the end of the message (atEOF). ok is false when head
// ends inside the header section: the header is larger than the caller
// read, and rewriting only part of it could leave a second From behind.
//
// RFC 5322 §3.6.2: From is a mailbox-list. One mailbox keeps its display
// name and gets the account's address. Several mailboxes become the
// account alone (the account is the one author that can be vouched for);
// no Sender field is added, as §3.6.2 asks for one only when From has
// several mailboxes, and says it SHOULD NOT be used when it would equal
// From. Existing Sender fields named the device as transmitter and are
// removed for the same reason. When the message has no Reply-To, the
// original mailboxes that are valid addresses (other than the account)
// become its Reply-To. A message without From gets one.
func Rewrite(head []byte, atEOF bool, account string) (out []byte, res Result, ok bool) {
	fields, rest, sep, complete := split(head, atEOF)
	if !complete {
		return nil, Result{}, false
	}
	nl := lineEnding(head)
	var froms []field
	hasReplyTo := false
	for _, f := range fields {
		switch {
		case f.is("From"):
			froms = append(froms, f)
		case f.is("Reply-To"):
			hasReplyTo = true
		}
	}
	var mailboxes []mailbox
	for _, f := range froms {
		mailboxes = append(mailboxes, parseMailboxList(f.value())...)
	}
	var originals [][]byte
	for _, m := range mailboxes {
		if m.valid() {
			res.Original = append(res.Original, string(m.address()))
			if !strings.EqualFold(string(m.address()), account) {
				originals = append(originals, m.raw)
			}
		}
	}
	var b bytes.Buffer
	b.Grow(len(head) + 2*len(account) + 64)
	wroteFrom := false
	for _, f := range fields {
		switch {
		case f.is("Sender"):
			res.Removed++
			continue
		case f.is("From") && wroteFrom:
			res.Removed++
			continue
		case f.is("From"):
			wroteFrom = true
			writeFrom(&b, f, mailboxes, len(froms) > 1, account, nl)
			if !hasReplyTo && len(originals) > 0 {
				b.WriteString("Reply-To:")
				b.Write(bytes.Join(originals, []byte(",")))
				b.WriteString(nl)
				res.ReplyTo = true
			}
			continue
		}
		b.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			b.WriteString(nl) // the message's last line had no line ending
		}
	}
	if !wroteFrom {
		b.WriteString("From: " + account + nl)
		res.FromAdded = true
	}
	switch {
	case sep != nil:
		b.Write(sep)
	case len(rest) > 0:
		b.WriteString(nl) // the body began without an empty line
	}
	b.Write(rest)
	return b.Bytes(), res, true
}

// writeFrom writes the rewritten From field.
func writeFrom(b *bytes.Buffer, f field, mailboxes []mailbox, severalFields bool, account, nl string) {
	if len(mailboxes) != 1 || severalFields {
		b.WriteString("From: " + account + nl)
		return
	}
	m := mailboxes[0]
	b.Write(f.name()) // "From:" as written
	v := f.value()
	if m.addrStart == m.addrEnd && !m.angle {
		b.WriteString(" " + account + nl) // nothing that looks like an address
		return
	}
	b.Write(v[:m.addrStart])
	b.WriteString(account)
	b.Write(v[m.addrEnd:])
	b.WriteString(nl)
}

// lineEnding is the line ending the message uses ("\r\n" unless its first
// line ends in a bare "\n").
func lineEnding(head []byte) string {
	if i := bytes.IndexByte(head, '\n'); i == 0 || i > 0 && head[i-1] != '\r' {
		return "\n"
	}
	return "\r\n"
}

// field is one header field: its first line and continuation lines, with
// their line endings.
type field struct {
	raw   []byte
	colon int // index of the ':' in raw
}

// is reports whether the field is called name (case-insensitive; the
// obsolete syntax allows spaces before the colon, RFC 5322 §4.5).
func (f field) is(name string) bool {
	return strings.EqualFold(strings.TrimRight(string(f.raw[:f.colon]), " \t"), name)
}

func (f field) name() []byte { return f.raw[:f.colon+1] }

// value is the field body without the final line ending.
func (f field) value() []byte {
	v := f.raw[f.colon+1:]
	v = bytes.TrimSuffix(v, []byte("\n"))
	return bytes.TrimSuffix(v, []byte("\r"))
}

// split divides head into the header section's fields, the empty line
// that ends it (nil when none), and what follows. complete is false when
// head ends before the header section does.
func split(head []byte, atEOF bool) (fields []field, rest, sep []byte, complete bool) {
	i := 0
	for i < len(head) {
		end := bytes.IndexByte(head[i:], '\n')
		if end < 0 {
			if !atEOF {
				return nil, nil, nil, false // a partial line
			}
			end = len(head) - i
		} else {
			end++
		}
		line := head[i : i+end]
		switch {
		case len(bytes.TrimRight(line, "\r\n")) == 0:
			return fields, head[i+end:], line, true
		case (line[0] == ' ' || line[0] == '\t') && len(fields) > 0:
			last := &fields[len(fields)-1]
			last.raw = head[i-len(last.raw) : i+end]
		default:
			colon := fieldColon(line)
			if colon < 0 {
				return fields, head[i:], nil, true // the body starts here
			}
			fields = append(fields, field{raw: line, colon: colon})
		}
		i += end
	}
	return fields, nil, nil, atEOF
}

// fieldColon returns the index of the colon ending a field name (RFC 5322
// §3.6.8: printable ASCII but ':', then optional WSP before the colon in
// the obsolete syntax), or -1 when line does not start a field.
func fieldColon(line []byte) int {
	n := 0
	for n < len(line) && line[n] > ' ' && line[n] < 0x7f && line[n] != ':' {
		n++
	}
	if n == 0 {
		return -1
	}
	i := n
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if i < len(line) && line[i] == ':' {
		return i
	}
	return -1
}

// mailbox is one element of a mailbox-list, located in the field value.
type mailbox struct {
	raw []byte // the element as written, leading whitespace included
	// addrStart and addrEnd locate the addr-spec in the field value: inside
	// the angle brackets when angle is set, else the element's text
	// without surrounding whitespace and comments.
	addrStart, addrEnd int
	angle              bool
	value              []byte
}

func (m mailbox) address() []byte { return m.value[m.addrStart:m.addrEnd] }

// valid reports whether the mailbox's address is one replies can go to.
func (m mailbox) valid() bool {
	a := strings.TrimSpace(string(m.address()))
	if a == "" {
		return false
	}
	p, err := mail.ParseAddress("<" + a + ">")
	return err == nil && strings.Contains(p.Address, "@")
}

// parseMailboxList splits a From value at the commas outside quoted
// strings, comments and angle brackets, and locates each mailbox's
// address.
func parseMailboxList(v []byte) []mailbox {
	var out []mailbox
	start := 0
	sc := scanner{v: v}
	for sc.i < len(v) {
		if sc.skip() {
			continue
		}
		if v[sc.i] == ',' {
			out = append(out, locate(v, start, sc.i))
			start = sc.i + 1
		}
		sc.i++
	}
	out = append(out, locate(v, start, len(v)))
	// Empty elements ("From: a@x,,b@y", obsolete syntax) are no mailboxes;
	// an empty From keeps its one empty element, for writeFrom.
	kept := out[:0]
	for _, m := range out {
		if len(bytes.TrimSpace(m.raw)) > 0 {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return out[len(out)-1:]
	}
	return kept
}

// locate finds the address of the mailbox v[start:end].
func locate(v []byte, start, end int) mailbox {
	m := mailbox{raw: v[start:end], value: v}
	sc := scanner{v: v[:end], i: start}
	first, last := -1, -1
	for sc.i < end {
		if v[sc.i] == '(' {
			sc.skip()
			continue
		}
		if v[sc.i] == '<' {
			open := sc.i
			sc.i++
			for sc.i < end && v[sc.i] != '>' {
				if !sc.skip() {
					sc.i++
				}
			}
			m.angle, m.addrStart, m.addrEnd = true, open+1, min(sc.i, end)
			return m
		}
		from := sc.i
		if !sc.skip() {
			sc.i++
		}
		if !isSpace(v[from]) {
			if first < 0 {
				first = from
			}
			last = sc.i
		}
	}
	if first < 0 {
		m.addrStart, m.addrEnd = end, end
		return m
	}
	m.addrStart, m.addrEnd = first, last
	return m
}

// scanner walks a field value; skip steps over a quoted string or a
// (nested) comment at the current position.
type scanner struct {
	v []byte
	i int
}

func (s *scanner) skip() bool {
	switch s.v[s.i] {
	case '"':
		s.i++
		for s.i < len(s.v) && s.v[s.i] != '"' {
			if s.v[s.i] == '\\' {
				s.i++
			}
			s.i++
		}
		s.i = min(s.i+1, len(s.v))
		return true
	case '(':
		depth := 0
		for s.i < len(s.v) {
			switch s.v[s.i] {
			case '\\':
				s.i++
			case '(':
				depth++
			case ')':
				depth--
			}
			s.i++
			if depth == 0 {
				break
			}
		}
		s.i = min(s.i, len(s.v))
		return true
	}
	return false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
