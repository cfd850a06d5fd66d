package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// readLimit bounds how much of a message ReadHeader reads: a header
// section longer than this is cut before the field the limit falls in, and
// the rest of the message is not read. It is far above what any mail
// system sends (Postfix's header_size_limit is 100 KiB), so eligibility
// sees every field of a real message.
const readLimit = 1 << 20

// Header is the header section of an original message (RFC 5322 §2.1), as
// ReadHeader found it: complete header fields only, in order, with CRLF
// line endings. It never holds any part of the body.
type Header struct {
	fields []field
	// cut is set when the section went on beyond readLimit.
	cut bool
}

type field struct {
	name string // field name as written
	raw  []byte // the field's lines, each ending in CRLF
}

// ReadHeader reads the header section of a message from r. The section
// ends at the first empty line (RFC 5322 §2.1), at the end of the input,
// or at the first line that is neither a header field nor the
// continuation of one: like Postfix, such a line is taken as the start
// of the body, so a message without a header/body separator does not
// have its text returned as header (unless that text begins with lines
// of the form "Name: value", which nothing can tell from fields).
// Bare LF line endings are accepted and kept as CRLF. ReadHeader may read
// up to 4 KiB beyond the section (buffering) but returns none of it. A
// section beyond 1 MiB is cut before the field the limit falls in. Errors
// are the reader's.
func ReadHeader(r io.Reader) (*Header, error) {
	br := bufio.NewReaderSize(r, 4096)
	h := &Header{}
	total := 0
	for {
		line, err := readLine(br, readLimit-total)
		if errors.Is(err, errLineTooLong) {
			h.cut = true
			if continues(line) && len(h.fields) > 0 {
				h.fields = h.fields[:len(h.fields)-1] // incomplete
			}
			return h, nil
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		total += len(line)
		content := trimEOL(line)
		done := len(content) == 0
		switch {
		case done:
		case continues(content):
			done = len(h.fields) == 0 // a continuation line needs a field to continue
			if !done {
				last := &h.fields[len(h.fields)-1]
				last.raw = append(append(last.raw, content...), '\r', '\n')
			}
		default:
			name, ok := fieldName(content)
			done = !ok
			if ok {
				h.fields = append(h.fields, field{name: name, raw: append(append([]byte(nil), content...), '\r', '\n')})
			}
		}
		if done || err == io.EOF {
			return h, nil
		}
	}
}

var errLineTooLong = errors.New("line beyond the read limit")

// readLine returns the next line including its LF, or what is left at the
// end of the input; errLineTooLong and the line's start when it would take
// more than max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return append(line, chunk[:min(len(chunk), 1)]...), errLineTooLong
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) == 0 {
			return nil, io.EOF
		}
		return line, err
	}
}

// continues reports whether a line continues the field before it.
func continues(line []byte) bool {
	return len(line) > 0 && (line[0] == ' ' || line[0] == '\t')
}

// trimEOL removes a trailing LF or CRLF.
func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// fieldName returns the name of a header field line: printable ASCII but
// ':' (RFC 5322 §3.6.8), optionally followed by white space before the
// colon (the obsolete syntax of §4.5).
func fieldName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if i == 0 || j == len(line) || line[j] != ':' {
		return "", false
	}
	return string(line[:i]), true
}

// Get returns the unfolded value of the first field named name (compared
// without regard to case), without leading and trailing white space; ""
// when there is none.
func (h *Header) Get(name string) string {
	if v := h.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// values returns the unfolded values of every field named name.
func (h *Header) values(name string) []string {
	if h == nil {
		return nil
	}
	var out []string
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			out = append(out, fieldValue(f.raw))
		}
	}
	return out
}

// fieldValue unfolds a field (RFC 5322 §2.2.3: remove each CRLF that is
// followed by white space) and returns what follows the colon.
func fieldValue(raw []byte) string {
	v := strings.ReplaceAll(string(raw), "\r\n", "")
	v = v[strings.IndexByte(v, ':')+1:]
	return strings.Trim(v, " \t")
}

// section returns the header fields that fit in max bytes, cut at a field
// boundary, and whether any field was left out.
func (h *Header) section(max int) (out []byte, cut bool) {
	if h == nil {
		return nil, false
	}
	for i, f := range h.fields {
		if len(out)+len(f.raw) > max {
			return out, true
		}
		out = append(out, h.fields[i].raw...)
	}
	return out, h.cut
}
