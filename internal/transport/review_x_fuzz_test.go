package transport

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzXText: XText writes only xchar and hexchar (RFC 3461 §4: no space,
// CR, LF, '=' or bare '+', so a parameter cannot end early or smuggle
// another), ParseXText undoes it, and whatever ParseXText accepts
// encodes back to a value that parses to the same.
func FuzzXText(f *testing.F) {
	for _, s := range []string{"", "a+b=c", "x\r\nRCPT TO:<evil@x>", "é", "+", "+2B", "+2b", "a b", "\x00\xff"} {
		f.Add(s)
	}
	wire := regexp.MustCompile(`^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$`)
	f.Fuzz(func(t *testing.T, s string) {
		enc := XText(s)
		if !wire.MatchString(enc) {
			t.Fatalf("XText(%q) = %q: not xtext", s, enc)
		}
		back, err := ParseXText(enc)
		if err != nil || back != s {
			t.Fatalf("ParseXText(XText(%q)) = %q, %v", s, back, err)
		}
		if dec, err := ParseXText(s); err == nil {
			again, err := ParseXText(XText(dec))
			if err != nil || again != dec {
				t.Fatalf("ParseXText(%q) = %q does not round-trip: %q, %v", s, dec, again, err)
			}
		}
	})
}

// decodeUTF8AddrXText is RFC 6533 §3's utf-8-addr-xtext decoder, for the
// fuzz target below.
func decodeUTF8AddrXText(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			rest := s[i:]
			if !strings.HasPrefix(rest, `\x{`) {
				return "", false
			}
			end := strings.IndexByte(rest, '}')
			if end < 4 || end > 9 {
				return "", false
			}
			n, err := strconv.ParseUint(rest[3:end], 16, 32)
			if err != nil || n > utf8.MaxRune || strings.ToUpper(rest[3:end]) != rest[3:end] {
				return "", false
			}
			b.WriteRune(rune(n))
			i += end
		case c > ' ' && c < 0x7f && c != '+' && c != '=':
			b.WriteByte(c)
		default:
			return "", false
		}
	}
	return b.String(), true
}

// FuzzUTF8AddrXText: the encoding of any valid UTF-8 address is 7-bit
// printable ASCII without space, '+' or '=' (one parameter word) and
// decodes back to the address.
func FuzzUTF8AddrXText(f *testing.F) {
	for _, s := range []string{"jösé@example.org", "東@x", `a+b=c\d`, "a b", "\x01", "\r\n", "\U0010FFFF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		enc := UTF8AddrXText(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= ' ' || c >= 0x7f || c == '+' || c == '=' {
				t.Fatalf("UTF8AddrXText(%q) = %q holds %q", s, enc, c)
			}
		}
		back, ok := decodeUTF8AddrXText(enc)
		if !ok || back != s {
			t.Fatalf("UTF8AddrXText(%q) = %q decodes to %q, %v", s, enc, back, ok)
		}
	})
}
