package postgres

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// durable is a server for the benchmarks with fsync on, so that a commit
// costs what it costs in production (the tests' server has it off);
// TestMain stops it.
var durable struct {
	once sync.Once
	srv  *testutil.PostgresServer
	err  error
}

func durableDSN(b *testing.B) string {
	b.Helper()
	durable.once.Do(func() {
		durable.srv, durable.err = testutil.StartPostgresServer(testutil.PostgresOptions{Durable: true})
	})
	if durable.err != nil {
		b.Fatal(durable.err)
	}
	name, err := durable.srv.CreateDatabase()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = durable.srv.DropDatabase(name) })
	return durable.srv.DSN(name)
}

func stopDurable() {
	if durable.srv != nil {
		durable.srv.Stop()
	}
}

// BenchmarkEnqueue enqueues 2 KB messages from 1 and 16 goroutines and
// reports the group commit's messages per commit (each commit is one WAL
// flush) and the messages per second.
func BenchmarkEnqueue(b *testing.B) {
	cases := []struct {
		name    string
		workers int
		sealed  bool
	}{
		{"serial", 1, false},
		{"parallel16", 16, false},
		{"parallel16-sealed", 16, true},
		{"parallel64", 64, false},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{MaxConns: 20}
			if tc.sealed {
				opts.Sealer = storetest.NewSealer(b)
			}
			s := openTest(b, durableDSN(b), opts)
			body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
			benchParallel(b, s, tc.workers, func(ctx context.Context) error {
				return s.Enqueue(ctx, storetest.BenchMessage(transport.NewID(), body))
			})
		})
	}
}

// BenchmarkEnqueueFinishParallel is a message's whole life in the store
// as the queue lives it when a worker is free: enqueued leased to this
// instance from 16 goroutines, then finished as delivered by its owner.
func BenchmarkEnqueueFinishParallel(b *testing.B) {
	s := openTest(b, durableDSN(b), Options{MaxConns: 20})
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
	benchParallel(b, s, 16, storetest.EnqueueFinish(s, body))
}

// benchParallel reports messages per commit beside
// storetest.BenchParallel's CPU per message and messages per second.
func benchParallel(b *testing.B, s *Store, workers int, op func(context.Context) error) {
	c0, m0 := s.CommitStats()
	w0 := walSyncs(b, s)
	storetest.BenchParallel(b, workers, op)
	c1, m1 := s.CommitStats()
	b.ReportMetric(float64(m1-m0)/float64(max(1, c1-c0)), "msgs/commit")
	b.ReportMetric(float64(b.N)/float64(max(1, walSyncs(b, s)-w0)), "msgs/wal-sync")
}

// walSyncs is how many times the server flushed its WAL to disk so far
// (pg_stat_wal, which its sessions report within a second).
func walSyncs(b *testing.B, s *Store) int64 {
	b.Helper()
	time.Sleep(1100 * time.Millisecond)
	var n int64
	if err := s.pool.QueryRow(context.Background(), `SELECT wal_sync FROM pg_stat_wal`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}
