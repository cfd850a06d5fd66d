package upstream

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Body loses its connection at DATA; the replay on a new connection is
// throttled at MAIL (a 4xx, so the connection is given up), and the
// attempt on yet another connection finds none free: the message gets
// the provider's 4xx (the relay's 451 in direct mode, a retry in the
// queue), never a replay on no connection at all.
func TestBodyAfterAGivenUpReplayWithoutAFreeConnection(t *testing.T) {
	throttledBody := func(t *testing.T, d transport.Delivery) {
		t.Helper()
		_, err := d.Body(context.Background(), memBody("Subject: x\r\n\r\nbody\r\n"))
		te := transport.As(err)
		if te == nil || te.Reply == nil || te.Reply.Code/100 != 4 {
			t.Fatalf("Body = %v, want the provider's 4xx", err)
		}
	}
	t.Run("pipelined, pool busy", func(t *testing.T) {
		log := &deliveryLog{}
		prov := startFakeProviderOffering(t, []string{"PIPELINING", "8BITMIME"}, log.wrap(scripts(
			rule{"DATA", "", first},
			rule{"MAIL", "451 4.7.0 throttled", later},
		)()))
		tr, pool := fakeTransportTo(t, prov)
		// Gets: BeginWith's, Body's reconnection, then another (busy).
		tr.Pool = &busyPool{countingPool: pool, busy: []int{3}}
		d, errs, err := tr.BeginWith(context.Background(), testEnvelope, []string{"a@example.net"}, nil)
		if err != nil || errs[0] != nil {
			t.Fatalf("BeginWith = %v, %v", errs, err)
		}
		defer d.Abort()
		throttledBody(t, d)
	})
	t.Run("stepwise, provider gone", func(t *testing.T) {
		var once sync.Once
		var prov *fakeProvider
		prov = startFakeProvider(t, func(conn int, line string) (string, bool) {
			switch {
			case conn == 1 && strings.HasPrefix(line, "DATA"):
				return "", true
			case conn > 1 && strings.HasPrefix(line, "MAIL"):
				return "451 4.7.0 throttled", false
			case conn > 1 && strings.HasPrefix(line, "RSET"):
				once.Do(func() { prov.ln.Close() }) // no further connection
				return "", true
			}
			return accepting(line), false
		})
		tr, _ := fakeTransportTo(t, prov)
		d, err := tr.Begin(context.Background(), testEnvelope)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Abort()
		if err := d.AddRcpt(context.Background(), "a@example.net", transport.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
		throttledBody(t, d)
	})
}
