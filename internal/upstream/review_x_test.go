package upstream

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Review X: an all-ASCII header section longer than transport.MaxHeader
// (64 KiB: long To/Cc lists, ARC/DKIM chains) in an SMTPUTF8 message to
// a provider without SMTPUTF8 is refused with 554 5.6.9 "a message with
// a UTF-8 header cannot be relayed" — a reply that is false and that
// README "Replies" does not list. The message needs no SMTPUTF8 at all.
func TestReviewXLongASCIIHeaderIsNotAUTF8Header(t *testing.T) {
	header := "Subject: long\r\nTo: " + strings.Repeat("someone@example.net, ", 4000) + "x@example.net\r\n\r\nbody\r\n"
	err := checkUTF8Header(func() (io.Reader, error) { return strings.NewReader(header), nil })
	var ue *Error
	if errors.As(err, &ue) && ue.Refusal == errUTF8Header {
		t.Errorf("an ASCII header of %d bytes (bound %d) refused as %q", len(header), transport.MaxHeader, ue.Refusal.Message)
	}
}
