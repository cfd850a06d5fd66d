package transport

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxHeader bounds how much of a message's header section the relay reads
// (for its Message-ID in the history, and for notifications).
const MaxHeader = 64 << 10

// maxMessageID bounds a stored Message-ID: a header line is at most 998
// characters (RFC 5322 §2.1.1).
const maxMessageID = 998

// ReadHeader reads the header section of a message (RFC 5322 §2.1: the
// lines up to and including the first empty one) from br, stopping after
// about limit bytes. consumed is everything read from br (a caller that
// passes the message on must send it first); header is the part of it
// made of whole lines within limit.
func ReadHeader(br *bufio.Reader, limit int) (consumed, header []byte, err error) {
	var buf []byte
	lineStart, whole := 0, 0
	for len(buf) < limit {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // the line goes on
		case err == io.EOF:
			if len(buf) <= limit {
				whole = len(buf) // a message that is all header
			}
			return buf, buf[:whole], nil
		case err != nil:
			return buf, buf[:whole], err
		}
		line := buf[lineStart:]
		lineStart = len(buf)
		if len(buf) > limit {
			break
		}
		whole = len(buf)
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return buf, buf[:whole], nil
		}
	}
	return buf, buf[:whole], nil
}

// headerField returns the unfolded value of the first field called name
// in a header section (RFC 5322 §2.2.3), and whether there is one.
func headerField(header []byte, name string) (string, bool) {
	lines := strings.Split(string(header), "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSuffix(lines[i], "\r")
		if line == "" {
			break // the end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // a folded line of another field
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimRight(k, " \t"), name) {
			continue
		}
		for i+1 < len(lines) && lines[i+1] != "" && (lines[i+1][0] == ' ' || lines[i+1][0] == '\t') {
			i++
			v += strings.TrimSuffix(lines[i], "\r")
		}
		return v, true
	}
	return "", false
}

// MessageID returns the Message-ID of a header section (RFC 5322 §3.6.4),
// its angle brackets included, for history search; "" when there is none.
// Malformed values are kept as far as they are printable.
func MessageID(header []byte) string {
	v, ok := headerField(header, "Message-ID")
	if !ok {
		return ""
	}
	v = strings.TrimSpace(v)
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		if gt := strings.IndexByte(v[lt:], '>'); gt >= 0 {
			v = v[lt : lt+gt+1]
		}
	}
	v = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, v)
	if len(v) > maxMessageID {
		cut := maxMessageID
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	return v
}
