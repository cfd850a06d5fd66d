package relay

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// headerOf returns a header section (fields and the empty line) of exactly
// n bytes.
func headerOf(n int) string {
	const tail = "Subject: s\r\n\r\n"
	var b strings.Builder
	for n-b.Len()-len(tail)-len("X-Last: \r\n") >= 79 {
		b.WriteString("X-Pad: " + strings.Repeat("p", 70) + "\r\n") // 79 bytes
	}
	pad := n - b.Len() - len(tail) - len("X-Last: \r\n")
	b.WriteString("X-Last: " + strings.Repeat("q", pad) + "\r\n")
	b.WriteString(tail)
	return b.String()
}

// Verification of the 64 KiB bound on a send_as header: exactly MaxHeader
// bytes (empty line included) is rewritten; 8 KiB more is refused. (The
// bound is fuzzy in between: ReadHeader finishes the line it is in, so up
// to one more line past 64 KiB is accepted.)
func TestReviewSendAsHeaderBoundary(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{{transport.MaxHeader, true}, {transport.MaxHeader + (8 << 10), false}} {
		h := headerOf(tc.size)
		if len(h) != tc.size {
			t.Fatalf("built %d bytes, want %d", len(h), tc.size)
		}
		var dst bytes.Buffer
		_, err := rewriteSendAs(&dst, strings.NewReader(h+"body\r\n"), "a@example.com")
		if got := err == nil; got != tc.ok {
			t.Errorf("header of %d bytes: err %v, want ok=%v", tc.size, err, tc.ok)
		}
	}
}

// Review finding (P2): a message whose body starts without an empty line
// and whose first body line is long is refused as "header section too
// large", although its header section is a few bytes: Rewrite would insert
// the empty line, but ReadHeader read on past the limit into the body
// line and the partial line makes the head "incomplete".
func TestReviewSendAsLongFirstBodyLineWithoutEmptyLine(t *testing.T) {
	msg := "Subject: scan\r\nFrom: mfp@dev.lan\r\n" + strings.Repeat("A", 70<<10) + "\r\n"
	var dst bytes.Buffer
	_, err := rewriteSendAs(&dst, strings.NewReader(msg), "a@example.com")
	if errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("a 34-byte header section refused as too large")
	}
	if err != nil {
		t.Fatal(err)
	}
}
