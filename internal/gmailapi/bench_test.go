package gmailapi_test

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// BenchmarkBody sends 1 MiB messages (one blind recipient, so the header
// is fitted) through the sandbox over TLS: the throughput of the whole
// path. B/op includes the sandbox, which holds each message in memory;
// TestBodyIsStreamed checks the transport's own allocations.
func BenchmarkBody(b *testing.B) {
	f := newFixture(b)
	msg := message(crlf("From: sender@gmail.test\nTo: a@example.com\nMessage-ID: <b@x>\nSubject: s\n\n") + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", (1<<20)/65))
	b.SetBytes(msg.Size())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := deliver(b, f.tr, transport.MailOptions{}, []string{"a@example.com", "blind@example.com"}, msg); err != nil {
			b.Fatal(err)
		}
	}
}
