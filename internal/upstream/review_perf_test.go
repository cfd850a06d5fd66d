package upstream

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// errorLimitProvider answers 550 to RCPT TO:<bad...>, and, once a
// connection has had `limit` errors, answers every later command with 421
// (as Postfix's smtpd_hard_error_limit or Exchange's error tarpit do).
func errorLimitProvider(limit int) func(conn int, line string) (string, bool) {
	var mu sync.Mutex
	errs := map[int]int{}
	return func(conn int, line string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if errs[conn] >= limit && !strings.HasPrefix(line, "QUIT") {
			return "421 4.7.0 Error: too many errors", false
		}
		if strings.HasPrefix(line, "RCPT TO:<bad") {
			errs[conn]++
			return "550 5.1.1 no such user", false
		}
		return accepting(line), false
	}
}

// Old path (Begin + AddRcpt, as the queue did before) vs BeginWith on the
// same provider: a 421 after two refused recipients.
func TestReviewErrorLimitStepwise(t *testing.T) {
	tr, _, _ := fakeTransport(t, errorLimitProvider(2))
	ctx := context.Background()
	d, err := tr.Begin(ctx, testEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Abort()
	var got []error
	for _, r := range []string{"bad1@example.net", "bad2@example.net", "good@example.net"} {
		got = append(got, d.AddRcpt(ctx, r, transport.RcptOptions{}))
	}
	t.Logf("stepwise verdicts: %v", codes(got))
	if got[2] != nil {
		t.Fatalf("good recipient refused: %v", got[2])
	}
	if _, err := d.Body(ctx, memBody("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("Body: %v", err)
	}
}

func TestReviewErrorLimitBeginWith(t *testing.T) {
	tr, _, prov := fakeTransport(t, errorLimitProvider(2))
	errs, err := sendAll(t, tr, "bad1@example.net", "bad2@example.net", "good@example.net")
	t.Logf("BeginWith: errs=%v err=%v connections=%d", errs, err, prov.conns.Load())
	if err != nil {
		t.Fatalf("BeginWith failed the whole envelope (%v, kind %v, reply %v) after %d connections; want [550 550 nil] and the message delivered to good@",
			err, transport.As(err).Kind, transport.As(err).Reply, prov.conns.Load())
	}
}

// Every recipient refused; the provider answers the pipelined DATA with 421.
func TestReviewAllRefusedThen421AtData(t *testing.T) {
	tr, _, prov := fakeTransport(t, errorLimitProvider(2))
	errs, err := sendAll(t, tr, "bad1@example.net", "bad2@example.net")
	t.Logf("BeginWith: errs=%v err=%v connections=%d", errs, err, prov.conns.Load())
	if err != nil {
		t.Fatalf("two permanent 550s became BeginWith's error %v (kind %v, reply %v) after %d connections; want errs [550 550]",
			err, transport.As(err).Kind, transport.As(err).Reply, prov.conns.Load())
	}
}

// MAIL refused, but the provider accepts the pipelined DATA (354): the
// connection must not return to the pool.
func TestReviewMailRefusedData354(t *testing.T) {
	tr, pool, _ := fakeTransport(t, func(_ int, line string) (string, bool) {
		if strings.HasPrefix(line, "MAIL") {
			return "451 4.3.0 not now", false
		}
		return accepting(line), false
	})
	_, err := sendAll(t, tr, "a@example.net")
	if err == nil {
		t.Fatal("want MAIL's refusal")
	}
	if n := pool.discarded.Load(); n != 1 {
		t.Fatalf("%d discarded, want 1", n)
	}
}
