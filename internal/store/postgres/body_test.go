package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// heapPeak samples the heap in use until stopped and returns its peak
// above what it was at the start.
func heapPeak() (stop func() uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// A 40 MB body is stored chunk by chunk from a reader that makes it up as
// it goes, and read back the same way: neither holds it in memory whole.
// Declared large, it commits on its own; undeclared, in the writer's
// batch.
func TestLargeBodyStreams(t *testing.T) {
	const size = 40 << 20
	s := openTest(t, newTestDB(t).store(t), Options{Sealer: storetest.NewSealer(t)})
	for _, declared := range []bool{true, false} {
		id := map[bool]string{true: "declared", false: "undeclared"}[declared]
		t.Run(id, func(t *testing.T) {
			m := testMsg(id)
			want := sha256.New()
			m.Body = io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), want)
			m.Size = 0
			if declared {
				m.Size = size
			}
			peak := heapPeak()
			if err := s.Enqueue(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			rc, err := s.Body(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			got := sha256.New()
			n, err := io.Copy(got, rc)
			rc.Close()
			used := peak()
			t.Logf("the heap grew by at most %.1f MB", float64(used)/(1<<20))
			if used > 16<<20 {
				t.Errorf("the heap grew by %d MB while a 40 MB body was stored and read", used>>20)
			}
			if err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("read back %d bytes (%v), which differ", n, err)
			}
			var chunks, stored int64
			if err := s.pool.QueryRow(t.Context(), `SELECT chunks, size FROM messages WHERE id = $1`, id).Scan(&chunks, &stored); err != nil {
				t.Fatal(err)
			}
			if chunks != (size+engine.ChunkSize-1)/engine.ChunkSize || stored != size {
				t.Errorf("%d chunks and size %d for %d bytes", chunks, stored, size)
			}
		})
	}
}

// Sealed bodies are not in the database in clear, nor their keys; a chunk
// moved to another message does not open.
func TestSealedBodiesInTheDatabase(t *testing.T) {
	sealer := storetest.NewSealer(t)
	sealer.Issued = make(chan []byte, 10)
	s := openTest(t, newTestDB(t).store(t), Options{Sealer: sealer})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("a"), testMsg("b")); err != nil {
		t.Fatal(err)
	}
	var data, wrapped []byte
	if err := s.pool.QueryRow(ctx, `SELECT c.data, k.wrapped FROM chunks c JOIN data_keys k ON k.id = c.key_id
		WHERE c.msg_id = 'a'`).Scan(&data, &wrapped); err != nil {
		t.Fatal(err)
	}
	key := <-sealer.Issued
	if bytes.Contains(data, []byte("secret-body-marker")) || bytes.Contains(wrapped, key) {
		t.Error("the body or its data key is stored in clear")
	}
	if _, err := s.pool.Exec(ctx, `UPDATE chunks SET data = (SELECT data FROM chunks WHERE msg_id = 'b') WHERE msg_id = 'a'`); err != nil {
		t.Fatal(err)
	}
	if _, err := storetest.ReadBody(context.Background(), s, "a"); !errors.Is(err, engine.ErrCorrupt) {
		t.Errorf("Body of a message with another's chunk: %v, want ErrCorrupt", err)
	}
	if got, err := storetest.ReadBody(context.Background(), s, "b"); err != nil || !bytes.Contains(got, []byte("secret-body-marker b")) {
		t.Errorf("Body(b): %q, %v", got, err)
	}
	// The key goes with the last body that uses it.
	for _, id := range []string{"a", "b"} {
		if err := s.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var keys int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM data_keys`).Scan(&keys); err != nil || keys != 0 {
		t.Errorf("%d data keys once their bodies are gone (%v)", keys, err)
	}
}

// A body read while its message leaves the queue fails instead of ending
// early; so does one read after Close.
func TestBodyReaderAfterTheMessageWent(t *testing.T) {
	s := openTest(t, newTestDB(t).store(t), Options{})
	ctx := t.Context()
	readers := map[string]io.ReadCloser{}
	for _, id := range []string{"deleted", "closed"} {
		m := testMsg(id)
		m.Body = bytes.NewReader(make([]byte, 3*engine.ChunkSize))
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Body(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, engine.ChunkSize)); err != nil {
			t.Fatal(err)
		}
		readers[id] = rc
	}
	if err := s.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(readers["deleted"]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reading a deleted message's body: %v, want ErrNotFound", err)
	}
	s.Close()
	if _, err := io.ReadAll(readers["closed"]); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("reading a body after Close: %v, want ErrUnavailable", err)
	}
}
