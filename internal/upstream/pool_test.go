package upstream

import (
	"testing"
	"time"
)

// TestPoolExpiry checks the reuse rules of pooled connections.
func TestPoolExpiry(t *testing.T) {
	p := &Pool{set: PoolSettings{IdleTimeout: time.Minute, MaxAge: time.Hour, MaxMessagesPerConnection: 3}}
	now := time.Now()
	fresh := func() *Conn { return &Conn{created: now, lastUsed: now} }
	tests := []struct {
		name string
		c    func() *Conn
		want bool
	}{
		{"fresh", fresh, true},
		{"idle too long", func() *Conn { c := fresh(); c.lastUsed = now.Add(-2 * time.Minute); return c }, false},
		{"too old", func() *Conn { c := fresh(); c.created = now.Add(-2 * time.Hour); return c }, false},
		{"worn out", func() *Conn { c := fresh(); c.messages = 3; return c }, false},
		{"broken", func() *Conn { c := fresh(); c.broken = true; return c }, false},
		{"before a flush", func() *Conn { c := fresh(); c.epoch = -1; return c }, false},
	}
	for _, tc := range tests {
		if got := p.usableLocked(tc.c(), now); got != tc.want {
			t.Errorf("%s: usable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
