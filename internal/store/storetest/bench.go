package storetest

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

// BenchMessage is a due message with two recipients and body, for the
// engines' benchmarks.
func BenchMessage(id string, body []byte) *store.NewMessage {
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

// EnqueueFinish is the operation of a benchmark of a message's whole
// life in a store as the queue lives it when a worker is free: enqueued
// (with a body) leased to this instance, then finished as delivered by
// its owner.
func EnqueueFinish(s store.Store, body []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		m := BenchMessage(transport.NewID(), body)
		m.LeaseOwner, m.LeaseUntil = "bench", time.Now().Add(time.Minute)
		if err := s.Enqueue(ctx, m); err != nil {
			return err
		}
		rcpts := map[string]store.Recipient{}
		for _, r := range m.Rcpts {
			rcpts[r.Addr] = store.Recipient{Addr: r.Addr, State: store.RcptDelivered, LastReply: "250 2.0.0 OK"}
		}
		return s.Finish(ctx, m.ID, "bench", store.Result{Counted: true, Reply: "250 2.0.0 OK", Rcpts: rcpts})
	}
}

// BenchParallel runs op b.N times from workers goroutines and reports
// the CPU time per operation (on a shared, noisy machine it varies far
// less than the rate) and the operations per second as msgs/s.
func BenchParallel(b *testing.B, workers int, op func(context.Context) error) {
	cpu0 := cpuTime()
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := op(context.Background()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
