package transport

import (
	"errors"
	"strconv"
	"strings"
)

// XText encodes s as xtext (RFC 3461 §4): printable US-ASCII but '+' and
// '=' as is, every other octet as "+HH". DSN parameters (ENVID, ORCPT)
// travel in this form.
func XText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("+" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
	}
	return b.String()
}

// ParseXText decodes xtext (RFC 3461 §4).
func ParseXText(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("xtext: incomplete hexchar")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] {
			return "", errors.New("xtext: malformed hexchar")
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}

// UTF8AddrXText encodes an address as utf-8-addr-xtext (RFC 6533 §3): the
// form of a "utf-8" ORCPT that needs no SMTPUTF8 on the way. Printable
// ASCII but '+', '=' and '\' stays; every other character becomes
// "\x{HEX}".
func UTF8AddrXText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '!' && r <= '~' && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		hex := strings.ToUpper(strconv.FormatInt(int64(r), 16))
		if len(hex) < 2 {
			hex = "0" + hex
		}
		b.WriteString(`\x{` + hex + "}")
	}
	return b.String()
}
