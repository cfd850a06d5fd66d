package graph

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// The guard passes every multipart body whose part headers fit, whatever
// its bodies hold, and fails one whose part header does not.
func TestHeaderGuard(t *testing.T) {
	big := "X-Filler: a\r\n" + strings.Repeat(" "+strings.Repeat("f", 70)+"\r\n", maxPartHeader/72+1)
	tests := []struct {
		name, body string
		fail       bool
	}{
		{"small headers", "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n", false},
		{"long body lines and look-alike delimiters", "--b\r\nA: 1\r\n\r\n" + strings.Repeat("x", 3*maxPartHeader) + "\r\n--bb\r\n" + strings.Repeat("y\r\n", maxPartHeader) + "--b--\r\n", false},
		{"bare LF lines", "--b\nA: 1\n\n" + strings.Repeat("z\n", maxPartHeader) + "--b--\n", false},
		{"transport padding after the delimiter", "--b \t\r\n" + big + "\r\nbody\r\n--b--\r\n", true},
		{"a huge part header", "preamble\r\n--b\r\nContent-Type: text/plain\r\n" + big + "\r\nbody\r\n--b--\r\n", true},
		{"a huge header in the second part", "--b\r\nA: 1\r\n\r\nx\r\n--b\r\n" + big + "\r\n\r\ny\r\n--b--\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newHeaderGuard(iotest.OneByteReader(strings.NewReader(tt.body)), "b")
			_, err := io.Copy(io.Discard, g)
			if got := errors.Is(err, errPartHeader); got != tt.fail {
				t.Errorf("error %v, want failure %v", err, tt.fail)
			}
		})
	}
}
