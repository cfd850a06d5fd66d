package upstream

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/limits"
)

// plainOpener opens unauthenticated connections to a scripted provider.
type plainOpener struct{ addr string }

func (o plainOpener) Open(context.Context) (*Conn, error) {
	raw, err := net.Dial("tcp", o.addr)
	if err != nil {
		return nil, err
	}
	return &Conn{c: newSMTPClient(raw, time.Minute), provider: "p", m: NewMetrics(nil), state: "in_use", created: time.Now()}, nil
}

// fakeGate hands out size slots, like limits.ConnSlots across instances.
type fakeGate struct {
	mu         sync.Mutex
	size, held int
	released   int
}

func (g *fakeGate) TryAcquire(context.Context) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held >= g.size {
		return nil, limits.ErrSlotsBusy
	}
	g.held++
	var once sync.Once
	return func() {
		once.Do(func() { g.mu.Lock(); g.held--; g.released++; g.mu.Unlock() })
	}, nil
}

func (g *fakeGate) set(size int) { g.mu.Lock(); g.size = size; g.mu.Unlock() }

func (g *fakeGate) counts() (held, released int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held, g.released
}

// TestPoolGate: a new connection needs a slot of the gate as well as room
// under the pool's own cap; without one TryGet is busy at once and Get
// waits until the gate has room (other instances gave slots back); a
// closed connection gives its slot back, an idle one keeps it.
func TestPoolGate(t *testing.T) {
	prov := startScriptedProvider(t)
	gate := &fakeGate{size: 1}
	p := &Pool{sender: plainOpener{prov.ln.Addr().String()}, set: PoolSettings{MaxConnections: 3, WaitTimeout: 5 * time.Second}, stop: make(chan struct{})}
	p.SetGate(gate)
	defer p.Close()
	ctx := context.Background()
	c1, _, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ue *Error
	if _, _, err := p.TryGet(ctx); !errors.As(err, &ue) || ue.Stage != StagePool || !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("TryGet without a slot: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		c, _, err := p.Get(ctx)
		if err == nil {
			p.Discard(c)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Get without a slot returned %v instead of waiting", err)
	case <-time.After(3 * gatePoll):
	}
	gate.set(2) // another instance closed a connection
	if err := <-got; err != nil {
		t.Fatalf("Get once a slot was free: %v", err)
	}
	if held, released := gate.counts(); held != 1 || released != 1 {
		t.Fatalf("after Discard: %d held, %d released; want 1 and 1", held, released)
	}
	p.Put(c1)
	if held, _ := gate.counts(); held != 1 {
		t.Fatalf("an idle connection held %d slots, want 1", held)
	}
	p.DropIdle()
	if held, _ := gate.counts(); held != 0 {
		t.Fatalf("after DropIdle: %d slots held", held)
	}
	if _, _, err := p.TryGet(ctx); err != nil {
		t.Fatalf("TryGet with a free slot: %v", err)
	}
}
