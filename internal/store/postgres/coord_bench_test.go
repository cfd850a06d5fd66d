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
	_, durable := ownServer(b, testutil.PostgresOptions{Durable: true})
	return []struct{ name, dsn string }{{"nosync", fast}, {"durable", durable}}
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

// BenchmarkCoordinatorReserve measures ReserveMessage (benchVariants;
// serially, ns/op is the round trip and the function's work, next to a
// bare SELECT 1).
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
		benchVariants(b, name, "reservations/s", func(b *testing.B, key, _ string) {
			if _, err := c.ReserveMessage(b.Context(), key, time.Now(), benchLimits); err != nil {
				b.Error(err)
			}
		})
	}
}

// BenchmarkCoordinatorSlot measures an AcquireSlot and its ReleaseSlot
// (two calls an op; benchVariants: on the hot key of 3 slots most
// acquisitions are refused).
func BenchmarkCoordinatorSlot(b *testing.B) {
	for _, server := range benchServers(b) {
		name, c := server.name, benchCoordinator(b, server.dsn)
		benchVariants(b, name, "pairs/s", func(b *testing.B, key, owner string) {
			acquireRelease(b, c, key, owner)
		})
	}
}

// benchVariants runs op (on a key, for an owner) one call at a time, in
// parallel over many keys (a domain's mailboxes), and in parallel on one
// hot key (every call waits for the key's lock).
func benchVariants(b *testing.B, name, unit string, op func(b *testing.B, key, owner string)) {
	b.Run(name+"/serial", func(b *testing.B) {
		for b.Loop() {
			op(b, "serial", "owner")
		}
		perSecond(b, unit)
	})
	variants := []struct {
		name string
		key  func(n int64) string
	}{
		{"parallel many keys", func(n int64) string { return fmt.Sprint("mailbox", n%1000) }},
		{"parallel one key", func(int64) string { return "hot" }},
	}
	for _, v := range variants {
		b.Run(name+"/"+v.name, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(benchParallelism)
			b.RunParallel(func(pb *testing.PB) {
				owner := fmt.Sprint("instance", next.Add(1))
				for pb.Next() {
					op(b, v.key(next.Add(1)), owner)
				}
			})
			perSecond(b, unit)
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
