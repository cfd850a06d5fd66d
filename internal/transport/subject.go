package transport

import (
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// MaxSubject bounds a subject kept in the history, in characters: enough
// to tell messages apart in the console, little enough that the history
// stays small whatever a client sends.
const MaxSubject = 200

// subjectDecoder decodes RFC 2047 encoded words in every charset
// go-message knows (UTF-8, ISO-8859-*, Windows-125*, KOI8, the CJK
// ones...), not only the three the standard library does.
var subjectDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// Subject returns the Subject of a header section (RFC 5322 §3.6.5) as
// the history keeps it: unfolded, its encoded words decoded (RFC 2047),
// without control or bidirectional formatting characters (which could
// garble or disguise what the console shows), cut to MaxSubject
// characters. A word that does not decode is kept as written; bytes that
// are not UTF-8 become U+FFFD. "" when there is none.
func Subject(header []byte) string {
	v, ok := headerField(header, "Subject")
	if !ok {
		return ""
	}
	if d, err := subjectDecoder.DecodeHeader(v); err == nil {
		v = d
	}
	v = strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			return -1
		}
		return r
	}, strings.ToValidUTF8(v, "\uFFFD"))
	v = strings.TrimSpace(v)
	if utf8.RuneCountInString(v) > MaxSubject {
		v = string([]rune(v)[:MaxSubject-1]) + "…"
	}
	return v
}
