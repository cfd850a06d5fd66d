package httpsend

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/limits"
)

// countingGate is a gate of size slots shared with other instances.
type countingGate struct {
	mu         sync.Mutex
	size, held int
}

func (g *countingGate) TryAcquire(context.Context) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held >= g.size {
		return nil, limits.ErrSlotsBusy
	}
	g.held++
	var once sync.Once
	return func() { once.Do(func() { g.mu.Lock(); g.held--; g.mu.Unlock() }) }, nil
}

func (g *countingGate) setSize(n int) { g.mu.Lock(); g.size = n; g.mu.Unlock() }

// TestMailboxAcquireShared: a request needs a slot of the process and one
// of every instance's; it waits for the shared one, gives the process's
// back when it gives up, and a failing gate fails the request.
func TestMailboxAcquireShared(t *testing.T) {
	gate := &countingGate{size: 1}
	m := &Mailbox{Account: "box@example.com", Shared: gate}
	slots := NewSlots(2)
	release, err := m.Acquire(context.Background(), slots)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*sharedPoll)
	defer cancel()
	if _, err := m.Acquire(ctx, slots); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("without a shared slot: %v, want to wait until the deadline", err)
	}
	// The process slot of the request that gave up is free again: with
	// the shared cap raised, two requests fit.
	gate.setSize(2)
	second, err := m.Acquire(context.Background(), slots)
	if err != nil {
		t.Fatalf("process slot not given back: %v", err)
	}
	waited := make(chan error, 1)
	go func() {
		r, err := m.Acquire(context.Background(), slots)
		if err == nil {
			r()
		}
		waited <- err
	}()
	release()
	release() // twice: once
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	second()
	if gate.held != 0 {
		t.Fatalf("%d shared slots still held", gate.held)
	}
}
