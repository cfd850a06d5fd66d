package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// pingCounter is a store whose Ping and Stats count their round trips;
// other calls panic (the nil interface).
type pingCounter struct {
	store.Store
	pings, stats atomic.Int32
}

func (s *pingCounter) Ping(context.Context) error { s.pings.Add(1); return nil }

func (s *pingCounter) Stats(context.Context) (*store.Stats, error) {
	s.stats.Add(1)
	return &store.Stats{}, nil
}

// TestSharedStoreHealthIsCached: /health/ready may be probed many times
// a second (load balancers, orchestrators, monitoring); the store's part
// of it costs the database one Ping and one Stats per freshness period,
// and none while the shared limits already know the database is
// unreachable.
func TestSharedStoreHealthIsCached(t *testing.T) {
	st := &pingCounter{}
	var degraded atomic.Bool
	outage := errors.New("store: unavailable: dial tcp 127.0.0.1:5432: connect: connection refused")
	d := &durable{store: st, sharedStore: true, degraded: func() (bool, error) { return degraded.Load(), outage }}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if status, up := d.health(); !up || status["up"] != true {
				t.Errorf("health() = %v, %v; want up", status, up)
			}
		})
	}
	wg.Wait()
	if p, s := st.pings.Load(), st.stats.Load(); p != 1 || s != 1 {
		t.Fatalf("20 probes cost %d Pings and %d Stats, want 1 and 1", p, s)
	}
	degraded.Store(true)
	d.expireHealth()
	status, up := d.health()
	if up || status["up"] != false || status["error"] != outage.Error() {
		t.Fatalf("health() with the shared database unreachable = %v, %v", status, up)
	}
	if p := st.pings.Load(); p != 1 {
		t.Fatalf("the store was pinged although the shared limits know it is unreachable (%d pings)", p)
	}
}
