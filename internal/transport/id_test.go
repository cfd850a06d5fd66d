package transport

import (
	"sync"
	"testing"
	"time"
)

func TestNewIDFormat(t *testing.T) {
	id := NewID()
	if len(id) != 16 {
		t.Fatalf("NewID() = %q, want 16 characters", id)
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			t.Fatalf("NewID() = %q: %q is not Crockford base32", id, c)
		}
	}
}

// IDs sort in the order they were made: within a millisecond, across
// milliseconds, and when the clock steps back.
func TestNewIDIncreases(t *testing.T) {
	base := time.UnixMilli(1_800_000_000_000)
	cases := []struct {
		name  string
		times []time.Time
	}{
		{"same millisecond", []time.Time{base, base, base}},
		{"next millisecond", []time.Time{base, base.Add(time.Millisecond), base.Add(time.Second)}},
		{"clock steps back", []time.Time{base, base.Add(-time.Second), base.Add(-time.Hour), base}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s idSource
			prev := ""
			for _, at := range tc.times {
				id := s.next(at)
				if id <= prev {
					t.Fatalf("ID %q made after %q does not sort after it", id, prev)
				}
				prev = id
			}
		})
	}
}

// A millisecond whose sequence runs out borrows the next one: the IDs
// still increase and never repeat.
func TestNewIDSequenceOverflow(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_000)
	s := idSource{ms: uint64(at.UnixMilli()), seq: 1<<32 - 3}
	prev := s.next(at)
	for range 4 {
		id := s.next(at)
		if id <= prev {
			t.Fatalf("ID %q does not sort after %q", id, prev)
		}
		prev = id
	}
	if s.ms != uint64(at.UnixMilli())+1 {
		t.Fatalf("after its sequence ran out, the source is at millisecond %d, want the next one", s.ms)
	}
}

// The millisecond is read back from the ID's first 48 bits: the IDs of a
// later time sort after those of an earlier one in another process too.
func TestNewIDOrdersAcrossSources(t *testing.T) {
	var a, b idSource
	early := a.next(time.UnixMilli(1_800_000_000_000))
	late := b.next(time.UnixMilli(1_800_000_000_001))
	if late <= early {
		t.Fatalf("ID %q of a later millisecond sorts before %q", late, early)
	}
}

func TestNewIDUniqueUnderConcurrency(t *testing.T) {
	const goroutines, each = 8, 2000
	var mu sync.Mutex
	seen := make(map[string]bool, goroutines*each)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			local := make([]string, 0, each)
			for range each {
				local = append(local, NewID())
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate ID %q", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}
