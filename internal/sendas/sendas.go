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
	"io"
	"mime"
	"net/mail"
	"strings"
)

// Result says what Rewrite changed.
type Result struct {
	// Original lists the addresses of the From mailboxes that parse (of
	// the first maxMailboxes), as written (for the log).
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
// ends inside the header section (the header is larger than the caller
// read, and rewriting only part of it could leave a second From behind)
// or when the header section is Malformed.
//
// RFC 5322 §3.6.2: From is a mailbox-list. One mailbox written as a
// display name and one <...> (or as a bare address), followed by nothing
// but whitespace and comments, keeps its display name and comments and
// gets the account's address, provided the result parses as the account
// alone; any other From becomes the account alone. Several mailboxes
// (more than maxMailboxes are not looked at) become the account alone
// (the account is the one author that can be vouched for);
// no Sender field is added, as §3.6.2 asks for one only when From has
// several mailboxes, and says it SHOULD NOT be used when it would equal
// From. Existing Sender fields named the device as transmitter and are
// removed for the same reason. When the message has no Reply-To, the
// original mailboxes that parse as addresses (other than the account)
// become its Reply-To. A message without From gets one.
func Rewrite(head []byte, atEOF bool, account string) (out []byte, res Result, ok bool) {
	h, ok := summarize(head, atEOF)
	if !ok {
		return nil, Result{}, false
	}
	nl := lineEnding(head)
	var originals [][]byte
	replyLen, budget := 0, maxParsed
	for _, m := range h.mailboxes {
		if budget -= len(m.raw); budget < 0 {
			break
		}
		addr, ok := m.parse()
		if !ok {
			continue
		}
		res.Original = append(res.Original, string(m.address()))
		if !strings.EqualFold(addr, account) {
			originals = append(originals, m.raw)
			replyLen += len(m.raw) + 1
		}
	}
	var b bytes.Buffer
	b.Grow(len(head) + replyLen + len(account) + 64)
	sc := fields{head: head, atEOF: atEOF}
	wroteFrom := false
	for f, more := sc.next(); more; f, more = sc.next() {
		switch {
		case f.is("Sender"):
			res.Removed++
			continue
		case f.is("From") && wroteFrom:
			res.Removed++
			continue
		case f.is("From"):
			wroteFrom = true
			writeFrom(&b, f, h.mailboxes, h.froms > 1, account, nl)
			if !h.replyTo && len(originals) > 0 {
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
	case sc.sep != nil:
		b.Write(sc.sep)
	case len(sc.rest) > 0:
		b.WriteString(nl) // the body began without an empty line
	}
	b.Write(sc.rest)
	return b.Bytes(), res, true
}

// Malformed reports whether the header section at the start of head, as
// far as head holds it, has a CR that does not end a line or a NUL.
// Rewrite refuses such a header: RFC 5322 §2.2 allows CR only in CRLF
// (and no NUL in a field), and parsers disagree on a bare CR, some ending
// the line there, so a field hidden behind one (a second From) could
// survive the rewrite for them.
func Malformed(head []byte, atEOF bool) bool {
	sc := fields{head: head, atEOF: atEOF}
	for _, more := sc.next(); more; _, more = sc.next() {
	}
	return sc.malformed
}

// header is what Rewrite needs to know of a header section before it
// writes the new one.
type header struct {
	froms     int       // From fields
	mailboxes []mailbox // of all From fields, at most maxMailboxes
	replyTo   bool      // there is a Reply-To field
}

// maxMailboxes bounds the From mailboxes Rewrite looks at, so that its
// memory follows the header's size whatever the header holds (a From of
// thousands of commas or addresses). A From with more is one of several
// mailboxes, which becomes the account alone anyway.
const maxMailboxes = 100

// maxParsed bounds the bytes of From that Rewrite hands to net/mail:
// parsing allocates up to some 50 bytes per byte of a quoted display name
// or of many words, so what is parsed is bounded rather than the header.
// Real From fields are far shorter; mailboxes past the bound go neither
// to Reply-To nor to the log, and a longer single mailbox becomes the
// account alone.
const maxParsed = 8 << 10

// summarize reads the header section at the start of head; ok is false
// when head ends inside it or it is malformed.
func summarize(head []byte, atEOF bool) (h header, ok bool) {
	sc := fields{head: head, atEOF: atEOF}
	for f, more := sc.next(); more; f, more = sc.next() {
		switch {
		case f.is("From"):
			h.froms++
			h.mailboxes = appendMailboxes(h.mailboxes, f.value())
		case f.is("Reply-To"):
			h.replyTo = true
		}
	}
	return h, sc.complete && !sc.malformed
}

// writeFrom writes the rewritten From field. One mailbox written as a
// display name and one angle-addr (or as a bare address) keeps everything
// but its address, and the result must parse as the account and nothing
// else (RFC 5322 §3.4); any other From, and one whose rewrite would not
// parse so, becomes the account alone. A mailbox such as
// "Bob <bob@dev.lan> Eve <ceo@example.com>" must not leave a second
// address behind: parsers differ on which one is the author.
func writeFrom(b *bytes.Buffer, f field, mailboxes []mailbox, severalFields bool, account, nl string) {
	if len(mailboxes) == 1 && !severalFields && mailboxes[0].form != formOther && len(mailboxes[0].raw) <= maxParsed {
		m := mailboxes[0]
		mark := b.Len()
		b.Write(f.name()) // "From:" as written
		b.Write(m.raw[:m.addrStart])
		b.WriteString(account)
		b.Write(m.raw[m.addrEnd:])
		if onlyAccount(b.Bytes()[mark+len(f.name()):], account) {
			b.WriteString(nl)
			return
		}
		b.Truncate(mark)
	}
	b.WriteString("From: " + account + nl)
}

// anyCharset parses addresses whose encoded-words (RFC 2047) are in any
// charset: the display name is kept byte for byte, so its charset does
// not matter, only the structure around it.
var anyCharset = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// onlyAccount reports whether a From field value is a mailbox-list of
// exactly one mailbox, the account.
func onlyAccount(v []byte, account string) bool {
	list, err := anyCharset.ParseList(unfold(v))
	return err == nil && len(list) == 1 && strings.EqualFold(list[0].Address, account)
}

// unfold removes the line breaks of a folded field value (RFC 5322
// §2.2.3); within a field every line break is followed by white space.
func unfold(v []byte) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
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
	n := bytes.TrimRight(f.raw[:f.colon], " \t")
	return len(n) == len(name) && strings.EqualFold(string(n), name)
}

func (f field) name() []byte { return f.raw[:f.colon+1] }

// value is the field body without the final line ending.
func (f field) value() []byte {
	v := f.raw[f.colon+1:]
	v = bytes.TrimSuffix(v, []byte("\n"))
	return bytes.TrimSuffix(v, []byte("\r"))
}

// fields walks the header section at the start of head, one field at a
// time, so that a header of many small fields costs no memory per field.
// The header section ends at the first empty line, or at the first line
// that is not a header field (a body without a separating empty line),
// or at the end of the message (atEOF).
type fields struct {
	head  []byte
	atEOF bool
	i     int
	done  bool
	// Set once next has returned false:
	rest      []byte // what follows the header section (and sep)
	sep       []byte // the empty line that ends the header section, nil when none
	complete  bool   // head holds the whole header section
	malformed bool   // the header section has a bare CR or NUL
}

// next returns the next field, or false at the end of the header section
// or of head.
func (s *fields) next() (field, bool) {
	if s.done {
		return field{}, false
	}
	start := s.i
	if start == len(s.head) {
		return s.stop(nil, nil, s.atEOF)
	}
	end, whole := s.lineEnd(start)
	line := s.head[start:end]
	if whole && len(bytes.TrimRight(line, "\r\n")) == 0 {
		s.malformed = bareCROrNUL(line) // "\r\r\n"
		return s.stop(s.head[end:], line, true)
	}
	colon, decided := fieldColon(line)
	switch {
	case colon < 0 && (decided || whole):
		return s.stop(s.head[start:], nil, true) // the body starts here
	case !whole:
		return s.stop(nil, nil, false) // a field's first line, partly read
	}
	for end < len(s.head) && (s.head[end] == ' ' || s.head[end] == '\t') {
		if end, whole = s.lineEnd(end); !whole {
			return s.stop(nil, nil, false)
		}
	}
	f := field{raw: s.head[start:end], colon: colon}
	if bareCROrNUL(f.raw) {
		s.malformed = true
		return s.stop(nil, nil, false)
	}
	s.i = end
	return f, true
}

func (s *fields) stop(rest, sep []byte, complete bool) (field, bool) {
	s.done, s.rest, s.sep, s.complete = true, rest, sep, complete
	return field{}, false
}

// lineEnd returns the end of the line starting at i, past its "\n";
// whole is false when head ends inside the line before the message does.
func (s *fields) lineEnd(i int) (end int, whole bool) {
	if n := bytes.IndexByte(s.head[i:], '\n'); n >= 0 {
		return i + n + 1, true
	}
	return len(s.head), s.atEOF
}

// bareCROrNUL reports whether b has a NUL or a CR not followed by LF.
func bareCROrNUL(b []byte) bool {
	for i, c := range b {
		if c == 0 || c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return true
		}
	}
	return false
}

// maxLineLength is RFC 5322 §2.1.1's limit on a line (998 characters
// without CRLF): a longer field name is no field name.
const maxLineLength = 998

// fieldColon returns the index of the colon ending a field name (RFC 5322
// §3.6.8: printable ASCII but ':', then optional WSP before the colon in
// the obsolete syntax), or -1 when line does not start a field. decided
// is false when line (the start of a line whose end is not read yet) ends
// before telling: a long first body line right after the header section
// (no empty line between) is known to be no field once it is longer than
// any field name could be, so that it is not mistaken for a header too
// large to rewrite.
func fieldColon(line []byte) (colon int, decided bool) {
	n := 0
	for n < len(line) && n <= maxLineLength && line[n] > ' ' && line[n] < 0x7f && line[n] != ':' {
		n++
	}
	i := n
	for i < len(line) && i <= maxLineLength && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	switch {
	case n == 0 || i > maxLineLength:
		return -1, true
	case i == len(line):
		return -1, false
	case line[i] == ':':
		return i, true
	}
	return -1, true
}

// mailbox is one element of a mailbox-list.
type mailbox struct {
	raw []byte // the element as written, leading whitespace included
	// addrStart and addrEnd locate the address in raw: inside the angle
	// brackets, or the element's text without surrounding whitespace and
	// comments.
	addrStart, addrEnd int
	form               mailboxForm
}

// mailboxForm tells how much of a mailbox Rewrite may keep.
type mailboxForm int

const (
	// formOther: anything else, such as text after the angle-addr, a
	// second angle-addr or a '<' never closed; it is not kept.
	formOther mailboxForm = iota
	// formAngle: a display name and exactly one <...>, followed by
	// nothing but whitespace and comments.
	formAngle
	// formBare: no angle brackets; the text between comments is the
	// address.
	formBare
)

// address is the mailbox's address as written, for the log.
func (m mailbox) address() []byte { return m.raw[m.addrStart:m.addrEnd] }

// parse returns the mailbox's address when the mailbox is one that
// replies can go to (RFC 5322 §3.4, encoded-words in any charset).
func (m mailbox) parse() (string, bool) {
	a, err := anyCharset.Parse(unfold(m.raw))
	if err != nil || !strings.Contains(a.Address, "@") {
		return "", false
	}
	return a.Address, true
}

// appendMailboxes appends to out the elements of the mailbox-list v
// (split at the commas outside quoted strings, comments and angle
// brackets), up to maxMailboxes in all. Empty elements ("a@x,,b@y", the
// obsolete syntax of RFC 5322 §4.4) are no mailboxes.
func appendMailboxes(out []mailbox, v []byte) []mailbox {
	start := 0
	sc := scanner{v: v}
	angle := false
	for sc.i <= len(v) && len(out) < maxMailboxes {
		if sc.i == len(v) || v[sc.i] == ',' && !angle {
			if raw := v[start:sc.i]; len(bytes.TrimSpace(raw)) > 0 {
				out = append(out, locate(raw))
			}
			start = sc.i + 1
			sc.i++
			continue
		}
		if sc.skip() {
			continue
		}
		switch v[sc.i] {
		case '<':
			angle = true
		case '>':
			angle = false
		}
		sc.i++
	}
	return out
}

// locate finds the address of a mailbox and tells its form.
func locate(raw []byte) mailbox {
	m := mailbox{raw: raw, addrStart: len(raw), addrEnd: len(raw)}
	sc := scanner{v: raw}
	first, last := -1, -1
	for sc.i < len(raw) {
		c := raw[sc.i]
		if c == '(' {
			sc.skip()
			continue
		}
		if c == '<' {
			return locateAngle(m, sc.i)
		}
		from := sc.i
		if !sc.skip() {
			sc.i++
		}
		if !isSpace(c) {
			if first < 0 {
				first = from
			}
			last = sc.i
		}
	}
	if first >= 0 {
		m.addrStart, m.addrEnd, m.form = first, last, formBare
	}
	return m
}

// locateAngle locates the angle-addr that opens at raw[open] and tells
// whether only whitespace and comments follow it.
func locateAngle(m mailbox, open int) mailbox {
	sc := scanner{v: m.raw, i: open + 1}
	for sc.i < len(m.raw) && m.raw[sc.i] != '>' {
		if !sc.skip() {
			sc.i++
		}
	}
	m.addrStart, m.addrEnd = open+1, sc.i
	if sc.i == len(m.raw) {
		return m // no '>'
	}
	for sc.i++; sc.i < len(m.raw); {
		switch {
		case m.raw[sc.i] == '(':
			sc.skip()
		case isSpace(m.raw[sc.i]):
			sc.i++
		default:
			return m // more after the angle-addr
		}
	}
	m.form = formAngle
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
