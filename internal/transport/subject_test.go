package transport

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSubject(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"plain", "From: a@x\r\nSubject: Scan from printer 4\r\n\r\n", "Scan from printer 4"},
		{"case and spacing", "subject  :   hello  \r\n\r\n", "hello"},
		{"folded", "Subject: a long\r\n\tsubject line\r\nTo: b@x\r\n\r\n", "a long subject line"},
		{"encoded UTF-8, Q", "Subject: =?UTF-8?Q?=C3=9Cberweisung_M=C3=A4rz?=\r\n\r\n", "Überweisung März"},
		{"encoded UTF-8, B", "Subject: =?utf-8?B?w5xiZXJ3ZWlzdW5n?=\r\n\r\n", "Überweisung"},
		{"encoded words joined", "Subject: =?UTF-8?Q?a?= =?UTF-8?Q?b?= c\r\n\r\n", "ab c"},
		{"encoded Latin-1", "Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\r\n\r\n", "Grüße"},
		{"encoded Windows-1252", "Subject: =?windows-1252?Q?=80_5?=\r\n\r\n", "€ 5"},
		{"encoded Shift_JIS", "Subject: =?Shift_JIS?B?g2WDWINn?=\r\n\r\n", "テスト"},
		{"unknown charset kept as written", "Subject: =?x-unknown?Q?abc?=\r\n\r\n", "=?x-unknown?Q?abc?="},
		{"malformed word kept", "Subject: =?UTF-8?B?###?= x\r\n\r\n", "=?UTF-8?B?###?= x"},
		{"raw UTF-8 (RFC 6532)", "Subject: Grüße\r\n\r\n", "Grüße"},
		{"not UTF-8", "Subject: Gr\xfc\xdfe\r\n\r\n", "Gr\uFFFDe"}, // one for the run of bad bytes,
		{"control characters dropped", "Subject: a\x00b\x07c\x1b[31md\x7f\r\n\r\n", "abc[31md"},
		{"encoded control characters dropped", "Subject: =?UTF-8?Q?a=0D=0Ab=00c?=\r\n\r\n", "abc"},
		{"bidi overrides dropped", "Subject: invoice\u202Egpj.exe\u202C\r\n\r\n", "invoicegpj.exe"},
		{"tab becomes a space", "Subject: a\tb\r\n\r\n", "a b"},
		{"first of two", "Subject: one\r\nSubject: two\r\n\r\n", "one"},
		{"not in the body", "From: a@x\r\n\r\nSubject: body\r\n", ""},
		{"empty", "Subject:\r\n\r\n", ""},
		{"none", "From: a@x\r\n\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Subject([]byte(tt.header)); got != tt.want {
				t.Errorf("Subject(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestSubjectIsBounded(t *testing.T) {
	for _, long := range []string{strings.Repeat("é", 5000), strings.Repeat("=?UTF-8?B?8J+YgA==?= ", 300)} {
		got := Subject([]byte("Subject: " + long + "\r\n\r\n"))
		if n := utf8.RuneCountInString(got); n != MaxSubject || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
			t.Errorf("a long subject became %d characters: %q", n, got)
		}
	}
	exact := strings.Repeat("x", MaxSubject)
	if got := Subject([]byte("Subject: " + exact + "\r\n\r\n")); got != exact {
		t.Errorf("a subject of exactly %d characters was cut: %q", MaxSubject, got)
	}
}

// FuzzSubject: whatever the header, the subject is valid UTF-8 of at most
// MaxSubject characters, without control or bidirectional formatting
// characters.
func FuzzSubject(f *testing.F) {
	for _, s := range []string{"Subject: x\r\n\r\n", "Subject: =?UTF-8?Q?=C3=9C?=\r\n\r\n", "Subject: =?gb2312?B?xOO6ww==?=\r\n",
		"Subject: a\r\n b\r\n\r\n", "Subject: \xff\x00\u202e\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, header []byte) {
		got := Subject(header)
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > MaxSubject {
			t.Fatalf("Subject = %q", got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("Subject = %q holds %U", got, r)
			}
		}
	})
}
