package postgres

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// benchParallelism is goroutines per GOMAXPROCS in the parallel
// benchmarks: relay workers mostly wait for the network, so there are
// many more of them than cores.
const benchParallelism = 8

// benchLimits admit everything and still run every check: a rate of a
// billion a minute with a burst of a minute's worth, and huge daily quotas.
var benchLimits = store.SharedLimits{PerMinute: 1e9, Burst: 1e9, DailyMsgs: 1 << 30, DailyRcpts: 1 << 30}

// benchServers are the databases the benchmarks run on: the test
// binary's server (fsync off, as in the tests) and one that syncs every
// commit to disk, as production does.
func benchServers(b *testing.B) []struct{ name, dsn string } {
	_, fast := testutil.Postgres(b)
	srv, err := testutil.StartPostgresServer(testutil.PostgresOptions{Durable: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	db, err := srv.CreateDatabase()
	if err != nil {
		b.Fatal(err)
	}
	return []struct{ name, dsn string }{{"nosync", fast}, {"durable", srv.DSN(db)}}
}

// benchCoordinator returns a coordinator on dsn's migrated database with
// a pool big enough for the parallel benchmarks.
func benchCoordinator(b *testing.B, dsn string) *Coordinator {
	applyCoordinatorSchemaForTest(b, dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = int32(benchParallelism * 4)
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return NewCoordinator(pool)
}

// perSecond reports op/s under unit.
func perSecond(b *testing.B, unit string) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

// BenchmarkCoordinatorReserve measures ReserveMessage: one at a time (ns/op
// is the round trip and the function's work, next to a bare SELECT 1),
// in parallel over many keys (a domain's mailboxes) and in parallel on
// one hot key (every call waits for the key's lock).
func BenchmarkCoordinatorReserve(b *testing.B) {
	for _, server := range benchServers(b) {
		name, c := server.name, benchCoordinator(b, server.dsn)
		b.Run(name+"/SELECT 1", func(b *testing.B) {
			for b.Loop() {
				if _, err := c.pool.Exec(b.Context(), "SELECT 1"); err != nil {
					b.Fatal(err)
				}
			}
			perSecond(b, "calls/s")
		})
		b.Run(name+"/serial", func(b *testing.B) {
			for b.Loop() {
				reserve(b, c, "serial")
			}
			perSecond(b, "reservations/s")
		})
		b.Run(name+"/parallel many keys", func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					reserve(b, c, fmt.Sprint("mailbox", next.Add(1)%1000))
				}
			})
			perSecond(b, "reservations/s")
		})
		b.Run(name+"/parallel one key", func(b *testing.B) {
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					reserve(b, c, "hot")
				}
			})
			perSecond(b, "reservations/s")
		})
	}
}

func reserve(b *testing.B, c *Coordinator, key string) {
	if _, err := c.ReserveMessage(b.Context(), key, time.Now(), benchLimits); err != nil {
		b.Error(err)
	}
}

// BenchmarkCoordinatorSlot measures an AcquireSlot and its ReleaseSlot
// (two calls an op): one at a time, in parallel over many keys, and in
// parallel on one key of 3 slots (most acquisitions are refused).
func BenchmarkCoordinatorSlot(b *testing.B) {
	for _, server := range benchServers(b) {
		name, c := server.name, benchCoordinator(b, server.dsn)
		b.Run(name+"/serial", func(b *testing.B) {
			for b.Loop() {
				acquireRelease(b, c, "serial", "owner")
			}
			perSecond(b, "pairs/s")
		})
		b.Run(name+"/parallel many keys", func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				owner := fmt.Sprint("instance", next.Add(1))
				for pb.Next() {
					acquireRelease(b, c, fmt.Sprint("mailbox", next.Add(1)%1000), owner)
				}
			})
			perSecond(b, "pairs/s")
		})
		b.Run(name+"/parallel one key", func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				owner := fmt.Sprint("instance", next.Add(1))
				for pb.Next() {
					acquireRelease(b, c, "hot", owner)
				}
			})
			perSecond(b, "pairs/s")
		})
	}
}

// acquireRelease takes a slot of key and, when granted, gives it back.
func acquireRelease(b *testing.B, c *Coordinator, key, owner string) {
	now := time.Now()
	slot, ok, err := c.AcquireSlot(b.Context(), key, owner, 3, now, now.Add(time.Minute))
	if err != nil {
		b.Error(err)
		return
	}
	if ok {
		if err := c.ReleaseSlot(b.Context(), key, owner, slot); err != nil {
			b.Error(err)
		}
	}
}
