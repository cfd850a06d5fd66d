package relay

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"alice@example.com", "alice@example.com", nil},
		{"first.last+tag@example.com", "first.last+tag@example.com", nil},
		{"john doe@example.net", `"john doe"@example.net`, nil},
		{"victim@example.net> NOTIFY=SUCCESS ORCPT=rfc822;x@evil.test", `"victim@example.net> NOTIFY=SUCCESS ORCPT=rfc822;x"@evil.test`, nil},
		{`a"b\c@example.net`, `"a\"b\\c"@example.net`, nil},
		{".leading@example.net", `".leading"@example.net`, nil},
		{"two..dots@example.net", `"two..dots"@example.net`, nil},
		{"ünïcödé@example.net", "ünïcödé@example.net", nil},
		{"x@[192.0.2.1]", "x@[192.0.2.1]", nil},
		{"x@[IPv6:2001:db8::1]", "x@[IPv6:2001:db8::1]", nil},
		{"alice@example.com\r", "", errControlChar},
		{"alice@exa\nmple.com", "", errControlChar},
		{"al\x00ice@example.com", "", errControlChar},
		{"alice\x7f@example.com", "", errControlChar},
		{"alice", "", errNoDomain},
		{"alice@", "", errBadDomain},
		{"alice@-bad.example", "", errBadDomain},
		{"alice@exa mple.com", "", errBadDomain},
		{"alice@b@c", `"alice@b"@c`, nil},
	}
	for _, tc := range tests {
		got, err := parseAddress(tc.in)
		if got != tc.want || err != tc.err {
			t.Errorf("parseAddress(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// FuzzParseAddress: whatever go-smtp hands over, a path that comes back has
// no control character, splits into one local part and one domain at its
// last '@', and its local part is a dot-string or a well-formed quoted
// string that unquotes to the original local part.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"alice@example.com", "john doe@example.net", `a"b\c@x`, "a@b@c", "x@[::1]", "\r@x", "", "@", "é@x", `"@"@x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		path, err := parseAddress(in)
		if err != nil {
			return
		}
		for i := 0; i < len(path); i++ {
			if c := path[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("control character in %q", path)
			}
		}
		at := strings.LastIndexByte(path, '@')
		local, domain := path[:at], path[at+1:]
		origAt := strings.LastIndexByte(in, '@')
		if domain != in[origAt+1:] {
			t.Fatalf("domain %q, want %q", domain, in[origAt+1:])
		}
		if isDotString(local) {
			if local != in[:origAt] {
				t.Fatalf("dot-string %q changed to %q", in[:origAt], local)
			}
			return
		}
		if len(local) < 2 || local[0] != '"' || local[len(local)-1] != '"' {
			t.Fatalf("local part %q is neither a dot-string nor quoted", local)
		}
		var un strings.Builder
		body := local[1 : len(local)-1]
		for i := 0; i < len(body); i++ {
			switch body[i] {
			case '\\':
				i++
				un.WriteByte(body[i])
			case '"':
				t.Fatalf("unescaped quote in %q", local)
			default:
				un.WriteByte(body[i])
			}
		}
		if un.String() != in[:origAt] {
			t.Fatalf("quoted %q unquotes to %q, want %q", local, un.String(), in[:origAt])
		}
	})
}
