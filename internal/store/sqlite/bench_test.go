package sqlite

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
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
				opts.Sealer = newTestSealer(b)
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

func benchEnqueue(b *testing.B, s *Store, workers int) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048/16)
	c0, m0 := s.CommitStats()
	cpu0 := cpuTime()
	var next atomic.Int64
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := s.Enqueue(context.Background(), benchMsg(transport.NewID(), body)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	c1, m1 := s.CommitStats()
	// CPU per message: on a shared, noisy machine it varies far less
	// than the rate.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(m1-m0)/float64(max(1, c1-c0)), "msgs/commit")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchMsg(id string, body []byte) *store.NewMessage {
	now := time.Now()
	return &store.NewMessage{
		Envelope: store.Envelope{
			ID: id, Account: "sender@example.com", Listener: "printers", Client: "10.0.0.7",
			From:       "<sender@example.com>",
			MailParams: []string{"BODY=8BITMIME"},
			Rcpts: []store.Recipient{
				{Addr: "<a@example.net>", State: store.RcptPending},
				{Addr: "<b@example.net>", State: store.RcptPending},
			},
			Size: int64(len(body)), Received: now, Expires: now.Add(120 * time.Hour), NextAttempt: now,
		},
		Body: bytes.NewReader(body),
	}
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
