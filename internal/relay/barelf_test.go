package relay

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBareLFDots(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"CRLF lines untouched", "a\r\n.b\r\n", "a\r\n.b\r\n"},
		{"stuffed dot after a bare LF undone", "a\n..b\n", "a\n.b\n"},
		{"a dot line after a bare LF", "a\n..\n", "a\n.\n"},
		{"a single dot after a bare LF", "a\n.\r\n", "a\n\r\n"},
		{"dot after CR LF kept", "a\r\n..b", "a\r\n..b"},
		{"dot after a lone CR kept", "a\r..b", "a\r..b"},
		{"only the first dot", "x\n...y\n", "x\n..y\n"},
		{"dots inside lines kept", "a.b\nc.d\n", "a.b\nc.d\n"},
		{"the start is go-smtp's", ".a\n", ".a\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, rd := range []struct {
				name string
				r    io.Reader
			}{
				{"whole", strings.NewReader(tc.in)},
				{"byte by byte", iotest.OneByteReader(strings.NewReader(tc.in))},
			} {
				got, err := io.ReadAll(&bareLFDots{r: rd.r})
				if err != nil || string(got) != tc.want {
					t.Errorf("%s: got %q, %v; want %q", rd.name, got, err, tc.want)
				}
			}
		})
	}
}
