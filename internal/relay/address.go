package relay

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// Address errors; each becomes a 501 reply.
var (
	errControlChar = errors.New("the address contains a control character")
	errNoDomain    = errors.New("the address has no domain")
	errBadDomain   = errors.New("the domain is not a valid host name or address literal")
)

// parseAddress checks an address as go-smtp passes it from MAIL or RCPT
// (a quoted local part already unquoted) and returns it as an SMTP path
// for the provider: the local part is re-quoted when it is not a
// dot-string (RFC 5321 §4.1.2), so that `"a> NOTIFY=SUCCESS"@x` stays one
// quoted mailbox upstream instead of becoming another recipient with
// smuggled parameters. Control characters (CR, LF, NUL, …) are refused,
// never trimmed away: a trimmed address is not the one the client sent.
func parseAddress(addr string) (path string, err error) {
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return "", errControlChar
		}
	}
	// The domain cannot contain '@'; a quoted local part can.
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", errNoDomain
	}
	local, domain := addr[:at], addr[at+1:]
	if !validDomain(domain) {
		return "", errBadDomain
	}
	return quoteLocal(local) + "@" + domain, nil
}

// quoteLocal returns a local part as a Dot-string when it is one, else as a
// Quoted-string with '"' and '\' escaped (RFC 5321 §4.1.2).
func quoteLocal(local string) string {
	if isDotString(local) {
		return local
	}
	var b strings.Builder
	b.Grow(len(local) + 2)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotString reports whether s is Atom *("." Atom); UTF-8 is allowed in
// atoms (RFC 6531 §3.3).
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAtext(s[i]) && s[i] != '.' {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain accepts a host name (letters, digits, '-', '_', UTF-8 labels)
// or an address literal in brackets.
func validDomain(d string) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	if d[0] == '[' {
		if d[len(d)-1] != ']' {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			c := d[i]
			if c <= ' ' || c == '[' || c == ']' || c == '\\' || c >= 0x7f {
				return false
			}
		}
		return true
	}
	for _, label := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80
			if !ok {
				return false
			}
		}
	}
	return true
}

// errUTF8WithoutSMTPUTF8 refuses a UTF-8 address in a transaction whose
// MAIL did not carry SMTPUTF8 (RFC 6531 §3.4: without it, an address must
// be ASCII, and the relay must not pass it on to a provider that may not
// take it).
var errUTF8WithoutSMTPUTF8 = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
	Message: "Non-ASCII address without SMTPUTF8: send MAIL FROM with the SMTPUTF8 parameter (RFC 6531)"}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// The longest DSN parameters a client may send (RFC 3461 §4.4: ENVID at
// most 100 characters; §4.2: ORCPT at most 500), so that the relay never
// passes on a MAIL or RCPT line the provider would refuse for good.
const (
	maxEnvID = 100
	maxORcpt = 500
)

func errParamTooLong(name string, max int) error {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4},
		Message: fmt.Sprintf("%s longer than %d characters (RFC 3461)", name, max)}
}
