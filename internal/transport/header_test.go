package transport

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMessageID(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"plain", "Subject: x\r\nMessage-ID: <a.b@example.com>\r\n\r\n", "<a.b@example.com>"},
		{"case and spacing", "message-id  :   <x@y>  \r\n\r\n", "<x@y>"},
		{"folded", "Message-Id:\r\n\t<folded@example.com>\r\nSubject: s\r\n\r\n", "<folded@example.com>"},
		{"comment after", "Message-ID: <c@d> (sent by a printer)\r\n\r\n", "<c@d>"},
		{"first of two", "Message-ID: <one@x>\r\nMessage-ID: <two@x>\r\n\r\n", "<one@x>"},
		{"bare LF", "Subject: s\nMessage-ID: <lf@x>\n\nbody", "<lf@x>"},
		{"no brackets", "Message-ID: naked@x\r\n\r\n", "naked@x"},
		{"not in the body", "Subject: s\r\n\r\nMessage-ID: <body@x>\r\n", ""},
		{"resent is another field", "Resent-Message-ID: <r@x>\r\n\r\n", ""},
		{"folded line of another field", "X-Note: a\r\n Message-ID: <no@x>\r\n\r\n", ""},
		{"control characters dropped", "Message-ID: <a\x00b\x7f@x>\r\n\r\n", "<ab@x>"},
		{"none", "Subject: s\r\n\r\n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MessageID([]byte(tt.header)); got != tt.want {
				t.Errorf("MessageID(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestMessageIDIsBounded(t *testing.T) {
	long := "Message-ID: <" + strings.Repeat("é", 2000) + "@x>\r\n\r\n"
	got := MessageID([]byte(long))
	if len(got) > maxMessageID || !utf8.ValidString(got) {
		t.Errorf("a long Message-ID became %d bytes (valid UTF-8: %v)", len(got), utf8.ValidString(got))
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, msg    string
		limit        int
		wantHeader   string
		wantConsumed int // at least this much was read
	}{
		{"header and body", "A: 1\r\nB: 2\r\n\r\nbody\r\n", 100, "A: 1\r\nB: 2\r\n\r\n", len("A: 1\r\nB: 2\r\n\r\n")},
		{"header only", "A: 1\r\nB: 2", 100, "A: 1\r\nB: 2", len("A: 1\r\nB: 2")},
		{"cut at the last whole line", "A: 1\r\nB: 22222222\r\nC: 3\r\n\r\n", 12, "A: 1\r\n", 12},
		{"no body separator within the limit", strings.Repeat("X: y\r\n", 10), 18, "X: y\r\nX: y\r\nX: y\r\n", 18},
		{"empty", "", 100, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.msg), 16)
			consumed, header, err := ReadHeader(br, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if string(header) != tt.wantHeader {
				t.Errorf("header = %q, want %q", header, tt.wantHeader)
			}
			if len(consumed) < tt.wantConsumed {
				t.Errorf("consumed %d bytes, want at least %d", len(consumed), tt.wantConsumed)
			}
			rest, _ := io.ReadAll(br)
			if string(consumed)+string(rest) != tt.msg {
				t.Error("consumed + rest is not the message")
			}
		})
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody"), 64)
	f.Add([]byte("Message-ID:\r\n <folded@x>\r\n\r\n"), 8)
	f.Add([]byte(strings.Repeat("X: y\n", 100)), 1000)
	f.Add([]byte("\r\n\r\n"), 1)
	f.Fuzz(func(t *testing.T, msg []byte, limit int) {
		if limit <= 0 || limit > 1<<20 {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(msg), 16)
		consumed, header, err := ReadHeader(br, limit)
		if err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(append(bytes.Clone(consumed), rest...), msg) {
			t.Fatal("consumed + rest is not the message")
		}
		if !bytes.HasPrefix(consumed, header) || len(header) > limit {
			t.Fatalf("header (%d bytes) is not a prefix of what was read within the limit %d", len(header), limit)
		}
		id := MessageID(header)
		if len(id) > maxMessageID || strings.ContainsAny(id, " \t\r\n\x00") || !utf8.ValidString(id) {
			t.Fatalf("MessageID = %q", id)
		}
	})
}
