package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// The writer checkpoints by itself (automatic checkpoints are off on its
// connection): under a steady stream of enqueues and deliveries the WAL
// is started over again and again instead of growing with the traffic,
// and Close leaves it empty.
func TestWALStaysBounded(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	ctx := context.Background()
	wal := filepath.Join(dir, FileName+"-wal")
	const messages = 2000 // about 20 WAL pages each without checkpoints
	var largest int64
	for i := 0; i < messages; i += 8 {
		batch := make([]*store.NewMessage, 8)
		for j := range batch {
			batch[j] = testMsg(transport.NewID())
		}
		if err := s.Enqueue(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		deliverAll(t, s)
		if fi, err := os.Stat(wal); err == nil {
			largest = max(largest, fi.Size())
		}
	}
	// A checkpoint every checkpointPages pages keeps the WAL near that
	// many pages (4 KiB each); without checkpoints it passes 40 MB here.
	if limit := int64(4 * checkpointPages * 4096); largest > limit {
		t.Fatalf("the WAL grew to %d bytes, want at most %d", largest, limit)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(wal); err == nil && fi.Size() != 0 {
		t.Fatalf("after Close the WAL has %d bytes, want it truncated", fi.Size())
	}
}

// deliverAll claims the due messages and finishes them as delivered.
func deliverAll(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	claimed, err := s.Claim(ctx, "test", time.Now(), 64, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claimed {
		if err := deliver(ctx, s, c); err != nil {
			t.Fatal(err)
		}
	}
}
