package upstream

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// errorLimit scripts a provider that refuses RCPT TO:<bad...> with 550
// and, once a connection has had limit refusals, answers every later
// command with 421, or hangs up when hangUp: Postfix's
// smtpd_hard_error_limit, Exchange's error tarpit; with no valid
// recipient, Exim's 421 to a pipelined DATA.
func errorLimit(limit int, hangUp bool) func() respondFunc {
	return func() respondFunc {
		var mu sync.Mutex
		refused := map[int]int{}
		return func(conn int, line string) (string, bool) {
			mu.Lock()
			defer mu.Unlock()
			if refused[conn] >= limit && !strings.HasPrefix(line, "QUIT") {
				return "421 4.7.0 Error: too many errors", hangUp
			}
			if strings.HasPrefix(line, "RCPT TO:<bad") {
				refused[conn]++
				return "550 5.1.1 no such user", false
			}
			return accepting(line), false
		}
	}
}

// A connection the provider closes after refusing recipients keeps the
// verdicts read: the envelope goes on on another connection with the
// recipients not yet answered only, as Begin and AddRcpt would.
func TestPipelinedEnvelopeKeepsVerdictsWhenTheConnectionBreaks(t *testing.T) {
	log := &deliveryLog{}
	tr, pool, prov := fakeTransport(t, log.wrap(errorLimit(2, false)()))
	errs, err := sendAll(t, tr, "bad1@example.net", "bad2@example.net", "good@example.net")
	if err != nil {
		t.Fatalf("BeginWith and Body = %v (connections %d); want the good recipient delivered", err, prov.conns.Load())
	}
	if got := codes(errs); len(got) != 3 || got[0] != 550 || got[1] != 550 || got[2] != 0 {
		t.Errorf("verdicts %v, want [550 550 0]", got)
	}
	if got := log.messages(); len(got) != 1 || got[0] != "good@example.net" {
		t.Errorf("provider took %q, want one message to good@", got)
	}
	if n, d := prov.conns.Load(), pool.discarded.Load(); n != 2 || d != 1 {
		t.Errorf("%d connections, %d discarded; want 2, the closed one discarded", n, d)
	}
}

// Every recipient refused, and the provider answers the pipelined DATA
// with 421 (Exim): the refusals are the verdicts; nothing is retried.
func TestPipelinedEnvelopeLostAtDataWithoutRecipients(t *testing.T) {
	for _, hangUp := range []bool{false, true} {
		tr, pool, prov := fakeTransport(t, errorLimit(2, hangUp)())
		errs, err := sendAll(t, tr, "bad1@example.net", "bad2@example.net")
		if err != nil {
			t.Fatalf("hang up %v: BeginWith = %v after %d connections; want the two 550s", hangUp, err, prov.conns.Load())
		}
		if got := codes(errs); len(got) != 2 || got[0] != 550 || got[1] != 550 {
			t.Errorf("hang up %v: verdicts %v, want [550 550]", hangUp, got)
		}
		if n, d := prov.conns.Load(), pool.discarded.Load(); n != 1 || d != 1 {
			t.Errorf("hang up %v: %d connections, %d discarded; want 1, discarded", hangUp, n, d)
		}
	}
}

// MAIL refused, but the provider accepts the pipelined DATA (354): the
// connection must not return to the pool.
func TestPipelinedEnvelopeMailRefusedDataAccepted(t *testing.T) {
	tr, pool, _ := fakeTransport(t, func(_ int, line string) (string, bool) {
		if strings.HasPrefix(line, "MAIL") {
			return "451 4.3.0 not now", false
		}
		return accepting(line), false
	})
	_, err := sendAll(t, tr, "a@example.net")
	if te := transport.As(err); err == nil || te.Reply.Code != 451 {
		t.Fatalf("BeginWith = %v, want MAIL's refusal", err)
	}
	if n := pool.discarded.Load(); n != 1 {
		t.Fatalf("%d discarded, want 1", n)
	}
}

// The old path with the same provider, for reference: Begin and AddRcpt
// replay the accepted recipients on another connection and go on.
func TestStepwiseEnvelopeKeepsVerdictsWhenTheConnectionBreaks(t *testing.T) {
	tr, _, _ := fakeTransport(t, errorLimit(2, false)())
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
	if c := codes(got); c[0] != 550 || c[1] != 550 || c[2] != 0 {
		t.Fatalf("verdicts %v, want [550 550 0]", c)
	}
	if _, err := d.Body(ctx, memBody("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("Body: %v", err)
	}
}
