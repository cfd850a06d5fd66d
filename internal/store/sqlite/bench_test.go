package sqlite

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// BenchmarkEnqueueParallel enqueues 2 KB messages from 16 goroutines and
// reports the group commit's messages per commit (each commit is one
// fsync) and the messages per second.
func BenchmarkEnqueueParallel(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		b.Run(map[bool]string{false: "clear", true: "sealed"}[sealed], func(b *testing.B) {
			opts := Options{}
			if sealed {
				opts.Sealer = storetest.NewSealer(b)
			}
			benchEnqueue(b, openTest(b, b.TempDir(), opts), 16)
		})
	}
}

// BenchmarkEnqueueSerial is the same from one goroutine: one commit, so
// one fsync, per message.
func BenchmarkEnqueueSerial(b *testing.B) {
	benchEnqueue(b, openTest(b, b.TempDir(), Options{}), 1)
}

// BenchmarkEnqueueFinishParallel is a message's whole life in the store
// as the queue lives it when a worker is free: enqueued leased to this
// instance from 16 goroutines, then finished as delivered by its owner.
func BenchmarkEnqueueFinishParallel(b *testing.B) {
	s := openTest(b, b.TempDir(), Options{})
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
	benchParallel(b, s, 16, storetest.EnqueueFinish(s, body))
}

func benchEnqueue(b *testing.B, s *Store, workers int) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
	benchParallel(b, s, workers, func(ctx context.Context) error {
		return s.Enqueue(ctx, storetest.BenchMessage(transport.NewID(), body))
	})
}

// benchParallel runs op b.N times from workers goroutines and reports
// messages per commit and WAL pages written per message beside
// storetest.BenchParallel's CPU per message and messages per second.
func benchParallel(b *testing.B, s *Store, workers int, op func(context.Context) error) {
	c0, m0 := s.CommitStats()
	p0 := s.walPagesWritten.Load()
	storetest.BenchParallel(b, workers, op)
	c1, m1 := s.CommitStats()
	b.ReportMetric(float64(m1-m0)/float64(max(1, c1-c0)), "msgs/commit")
	b.ReportMetric(float64(s.walPagesWritten.Load()-p0)/float64(b.N), "wal-pages/msg")
}

// BenchmarkDrain is the queue draining a backlog after an outage: claims
// of 64 due messages, each body read back, each message finished as
// delivered from 16 goroutines.
func BenchmarkDrain(b *testing.B) {
	s := openTest(b, b.TempDir(), Options{})
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
	ctx := context.Background()
	for i := 0; i < b.N; i += 64 {
		batch := make([]*store.NewMessage, 0, 64)
		for j := i; j < min(i+64, b.N); j++ {
			batch = append(batch, storetest.BenchMessage(transport.NewID(), body))
		}
		if err := s.Enqueue(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	claims := make(chan *store.Claimed, 64)
	go func() {
		defer close(claims)
		for left := b.N; left > 0; {
			got, err := s.Claim(ctx, "bench", time.Now(), min(64, left), time.Minute, nil)
			if err != nil {
				b.Error(err)
				return
			}
			for _, c := range got {
				claims <- c
			}
			left -= len(got)
		}
	}()
	benchParallel(b, s, 16, func(ctx context.Context) error {
		c, ok := <-claims
		if !ok {
			return nil
		}
		rc, err := s.Body(ctx, c.ID)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
		rcpts := map[string]store.Recipient{}
		for _, r := range c.Rcpts {
			rcpts[r.Addr] = store.Recipient{Addr: r.Addr, State: store.RcptDelivered, LastReply: "250 2.0.0 OK"}
		}
		return s.Finish(ctx, c.ID, "bench", store.Result{Counted: true, Reply: "250 2.0.0 OK", Rcpts: rcpts})
	})
}
