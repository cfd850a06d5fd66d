package transport

import "testing"

func TestXText(t *testing.T) {
	tests := []struct{ raw, xtext string }{
		{"plain-id.42@example.org", "plain-id.42@example.org"},
		{"a+b=c", "a+2Bb+3Dc"},
		{"with space", "with+20space"},
		{"tab\there", "tab+09here"},
		{"é", "+C3+A9"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := XText(tc.raw); got != tc.xtext {
			t.Errorf("XText(%q) = %q, want %q", tc.raw, got, tc.xtext)
		}
		back, err := ParseXText(tc.xtext)
		if err != nil || back != tc.raw {
			t.Errorf("ParseXText(%q) = %q, %v; want %q", tc.xtext, back, err, tc.raw)
		}
	}
	for _, bad := range []string{"a+", "a+2", "a+zz", "a+2b"} {
		if _, err := ParseXText(bad); err == nil {
			t.Errorf("ParseXText(%q) accepted malformed xtext", bad)
		}
	}
}

func TestUTF8AddrXText(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"plain@example.org", "plain@example.org"},
		{"jösé@example.org", `j\x{F6}s\x{E9}@example.org`},
		{"東@example.org", `\x{6771}@example.org`},
		{`a+b=c\d`, `a\x{2B}b\x{3D}c\x{5C}d`},
		{"a b", `a\x{20}b`},
		{"\x01", `\x{01}`},
	}
	for _, tc := range tests {
		if got := UTF8AddrXText(tc.raw); got != tc.want {
			t.Errorf("UTF8AddrXText(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestNotifies(t *testing.T) {
	tests := []struct {
		notify []string
		v      string
		want   bool
	}{
		{nil, "FAILURE", true},
		{nil, "DELAY", false},
		{nil, "SUCCESS", false},
		{[]string{"NEVER"}, "FAILURE", false},
		{[]string{"SUCCESS", "DELAY"}, "DELAY", true},
		{[]string{"success"}, "SUCCESS", true},
		{[]string{"SUCCESS"}, "FAILURE", false},
	}
	for _, tc := range tests {
		if got := Notifies(tc.notify, tc.v); got != tc.want {
			t.Errorf("Notifies(%q, %s) = %v, want %v", tc.notify, tc.v, got, tc.want)
		}
	}
}
