package upstream

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// A large envelope leaves maxUnansweredCommands commands at a time, each
// window after the replies to the one before it are read (RFC 2920 §3.1:
// a client that writes more than the network buffers hold before it
// reads can deadlock with the server); every recipient keeps its verdict.
func TestLargeEnvelopeIsPipelinedInWindows(t *testing.T) {
	const n = 250
	var delivered atomic.Int64
	tr, _, _ := fakeTransport(t, func(_ int, line string) (string, bool) {
		if strings.HasPrefix(line, "RCPT") && strings.Contains(line, "refused") {
			return "550 5.1.1 no such user", false
		}
		if line == "." {
			delivered.Add(1)
		}
		return accepting(line), false
	})
	rcpts := make([]string, n)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("r%d@example.net", i)
		if i%7 == 3 {
			rcpts[i] = fmt.Sprintf("refused%d@example.net", i)
		}
	}
	opener := tr.Pool.(*countingPool).sender.(*fakeOpener)
	d, errs, err := tr.BeginWith(context.Background(), testEnvelope, rcpts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Abort()
	if len(errs) != n {
		t.Fatalf("%d verdicts for %d recipients", len(errs), n)
	}
	for i, err := range errs {
		if refused := i%7 == 3; refused != (err != nil) {
			t.Fatalf("recipient %d (%s): verdict %v", i, rcpts[i], err)
		}
	}
	opener.mu.Lock()
	writes := opener.all[0].n.Load()
	opener.mu.Unlock()
	// EHLO, then MAIL, 250 RCPTs and DATA: 252 commands in windows of 100.
	if writes-1 != 3 {
		t.Errorf("the envelope took %d writes, want 3 windows of at most %d commands", writes-1, maxUnansweredCommands)
	}
	if _, err := d.Body(context.Background(), memBody("Subject: many\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if delivered.Load() != 1 {
		t.Fatalf("provider got %d messages, want 1", delivered.Load())
	}
}
