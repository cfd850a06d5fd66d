package graph_test

import (
	"context"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// TestLargeMessageWithoutMailReadWrite: creating a draft, its upload
// sessions and deleting it need the Mail.ReadWrite permission (Microsoft
// Graph, "Create message": Application Mail.ReadWrite), which an app that
// was given Mail.Send only (what README and the advice ask for) lacks.
// Graph then answers 403 ErrorAccessDenied at the draft's creation. That
// refusal is about large messages only: the advice must name
// Mail.ReadWrite, and it must not open the account's circuit, which would
// stop the small messages that sendMail still sends.
func TestLargeMessageWithoutMailReadWrite(t *testing.T) {
	f := newFixture(t)
	var logs testutil.LogBuffer
	f.tr.Log = logs.Logger(t)
	f.tr.Circuit = limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	f.sb.Graph.FailNextAt(mailbox, devsandbox.GraphOpCreateDraft, devsandbox.GraphAccessDenied)
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, largeFailureMessage()); err == nil {
		t.Fatal("the large message went out although Graph refused its draft")
	}
	if !strings.Contains(logs.String(), "Mail.ReadWrite") {
		t.Errorf("the operator is not told that large messages need Mail.ReadWrite; log:\n%s", logs.String())
	}
	if _, err := deliver(t, f.tr, transport.MailOptions{}, []string{"a@example.com"}, crlf("To: a@example.com\nSubject: small\n\n")+body); err != nil {
		t.Errorf("a small message after the draft's refusal: %v (%s); account circuit %s", err, transport.ReplyText(transport.As(err).Reply), f.tr.Circuit.State())
	}
}

// hugePartHeader is a message whose attachment part has a header section
// of n bytes (one field folded over many lines) before a 3.5 MB body: the
// split must not hold that header, let alone several copies of it.
type hugePartHeader struct{ n int }

const hugeHead = largeHeader + "Content-Type: multipart/mixed; boundary=\"h\"\r\n\r\n--h\r\n" +
	"Content-Type: text/plain\r\n\r\nsee attached\r\n--h\r\nContent-Type: application/octet-stream\r\n" +
	"Content-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\nX-Filler: start\r\n"

const hugeTail = "\r\n--h--\r\n"

// fillerLine continues X-Filler (RFC 5322 §2.2.3 folding).
var fillerLine = " " + strings.Repeat("f", 76) + "\r\n"

// hugePartBody is made once, so that the test's own allocations stay
// out of the measurement.
var hugePartBody = sync.OnceValue(func() string { return "\r\n" + base64Lines(randomBytes(3_500_000, 21)) })

func (h hugePartHeader) bodyPart() string { return hugePartBody() }

func (h hugePartHeader) Size() int64 {
	lines := h.n / len(fillerLine)
	return int64(len(hugeHead) + lines*len(fillerLine) + len(h.bodyPart()) + len(hugeTail))
}

func (h hugePartHeader) Reader() (io.Reader, error) {
	lines := h.n / len(fillerLine)
	return io.MultiReader(strings.NewReader(hugeHead), &repeatReader{s: fillerLine, left: lines},
		strings.NewReader(h.bodyPart()), strings.NewReader(hugeTail)), nil
}

// repeatReader reads s left times without holding the result.
type repeatReader struct {
	s    string
	left int
	cur  string
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.cur == "" {
		if r.left == 0 {
			return 0, io.EOF
		}
		r.left--
		r.cur = r.s
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// TestHugePartHeaderMemoryBounded: a part's header section is read whole
// by go-message (no limit), kept in the plan's node for the whole
// sequence, and read again by each of the three passes. A 24 MB header
// in a ~29 MB message must not make the relay allocate many times the
// message: the bound is the one TestLargeMessageMemoryBounded keeps for
// a 40 MB message.
func TestHugePartHeaderMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("reads a 29 MB message")
	}
	child := startSandboxChild(t)
	tr := child.transport(t)
	msg := hugePartHeader{n: 24_000_000}
	if r, _ := msg.Reader(); countBytes(r) != msg.Size() {
		t.Fatalf("the generated message is not Size() = %d bytes long", msg.Size())
	}
	ctx := context.Background()
	d, err := tr.Begin(ctx, transport.Envelope{ID: "hdr", Account: mailbox, From: mailbox, Mail: transport.MailOptions{Size: msg.Size()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddRcpt(ctx, "a@example.com", transport.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	sampler := sampleHeap()
	_, err = d.Body(ctx, msg)
	peak := sampler.Stop()
	runtime.ReadMemStats(&after)
	if err != nil && transport.As(err).Temporary() {
		t.Errorf("a temporary failure for a message no retry changes: %v", err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	peakAbove := int64(peak) - int64(before.HeapAlloc)
	t.Logf("outcome %v; allocated %.1f MiB; heap peak %.1f MiB above the start", err, float64(allocated)/(1<<20), float64(peakAbove)/(1<<20))
	if allocated > 16<<20 {
		t.Errorf("allocated %d bytes for a %d-byte message whose part header is %d bytes", allocated, msg.Size(), msg.n)
	}
	if peakAbove > 16<<20 {
		t.Errorf("heap peak %d bytes above the start", peakAbove)
	}
}
