package main

// Several instances on one PostgreSQL database (README "Several
// instances"): the store-and-forward relay on one instance against three
// on the same database, with the same clients spread over the three. The
// ratio says what the coordination (claims with leases, shared limits and
// connection slots) costs.

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// instancesResult is one shared-database scenario: its two rows and the
// messages it did not deliver.
type instancesResult struct {
	Instances   int      `json:"instances"`
	Accept      scenario `json:"accept"`
	EndToEnd    scenario `json:"delivered"`
	Undelivered int      `json:"undelivered"`
}

// sharedScenarios measures the queue on a fresh database with one
// instance and then with three. The PostgreSQL server keeps fsync on, as
// a real one does.
func (b *bench) sharedScenarios() error {
	srv, err := testutil.StartPostgresServer(testutil.PostgresOptions{Durable: true})
	if err != nil {
		return err
	}
	defer srv.Stop()
	for _, n := range []int{1, 3} {
		db, err := srv.CreateDatabase()
		if err != nil {
			return err
		}
		res, err := b.sharedRun(srv.DSN(db), n)
		if err != nil {
			return err
		}
		b.rep.Shared = append(b.rep.Shared, res)
		b.rep.Scenarios = append(b.rep.Scenarios, res.Accept, res.EndToEnd)
	}
	return nil
}

// sharedRun starts n instances on the database dsn and measures the
// clients' 250s (spread over the instances) and the deliveries.
func (b *bench) sharedRun(dsn string, n int) (instancesResult, error) {
	res := instancesResult{Instances: n}
	rt := b.sb.Tokens.IssueRefreshToken(clientID, account, config.GoogleScope)
	var procs []*relayProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	var addrs []string
	for i := 0; i < n; i++ {
		q := &queueSettings{workers: b.queueWorkers, postgres: dsn, instances: n, name: fmt.Sprintf("-pg%d-%d", n, i)}
		cfgPath, addr, tel := relayConfig(b.sb, b.caFile, rt, b.dir, 1, "warn", q)
		p, err := startRelayAt(b.relayBin, cfgPath, addr)
		if err != nil {
			return res, err
		}
		p.telemetry = tel
		procs = append(procs, p)
		addrs = append(addrs, addr)
	}
	name := "PostgreSQL queue, 1 instance"
	if n > 1 {
		name = fmt.Sprintf("PostgreSQL queue, %d instances", n)
	}
	base := markSandbox(b.sb)
	var stored atomic.Int64
	spread := spreadOver(addrs)
	send := func(st *clientState) error {
		err := spread(st)
		if err == nil {
			stored.Add(1)
		}
		return err
	}
	var warm int
	var warmed sandboxMark
	warmedUp := func() {
		warm = int(stored.Load())
		if _, err := awaitDelivered(b.sb, base, warm, drainTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "  shared queue warm-up:", err)
		}
		warmed = markSandbox(b.sb)
	}
	res.Accept = measureAfter(name+": accept", b.clients, b.duration, nil, send, warmedUp)
	want := int(stored.Load()) - warm
	msgs, err := awaitDelivered(b.sb, warmed, want, drainTimeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "  shared queue drain:", err)
	}
	res.EndToEnd = endToEnd(res.Accept, msgs, procs[0], 0, 0)
	// endToEnd measures one process's CPU; the row is about rates only.
	res.EndToEnd.CPUSecondsPer1000, res.EndToEnd.RelayCores, res.EndToEnd.BenchCores, res.EndToEnd.RelayRSSMB = 0, 0, 0, 0
	res.EndToEnd.Name = name + ": delivered"
	res.Undelivered = max(0, want-res.EndToEnd.Messages)
	res.EndToEnd.Errors = res.Undelivered
	fmt.Fprintf(os.Stderr, "  %-40s %8.0f msgs/s  (%d delivered, %d undelivered)\n", res.EndToEnd.Name, res.EndToEnd.PerSecond, res.EndToEnd.Messages, res.Undelivered)
	return res, nil
}

// spreadOver sends over a connection of the client's own to one of the
// listeners at addrs, given to the clients in turn as they connect.
func spreadOver(addrs []string) sendFn {
	paths := make([]path, len(addrs))
	for i, a := range addrs {
		paths[i] = relayPath(a)
	}
	var next atomic.Int64
	return func(st *clientState) error {
		if st.relay == nil {
			c, err := paths[int(next.Add(1))%len(paths)].dial()
			if err != nil {
				return err
			}
			st.relay = c
		}
		return paths[0].reuse(st) // sends on st.relay
	}
}

// sharedTargets: three instances on one database do at least 90% of what
// one does (the coordination costs less than 10%), and lose nothing.
func sharedTargets(rs []instancesResult) []target {
	if len(rs) != 2 {
		return nil
	}
	one, three := rs[0], rs[1]
	accept := ratio(three.Accept.PerSecond, one.Accept.PerSecond)
	delivered := ratio(three.EndToEnd.PerSecond, one.EndToEnd.PerSecond)
	errs := one.Accept.Errors + three.Accept.Errors
	lost := one.Undelivered + three.Undelivered
	return []target{
		{"PostgreSQL queue accept: 3 instances / 1 instance ≥ 0.9", fmt.Sprintf("%.2f×", accept), accept >= 0.9},
		{"PostgreSQL queue delivered: 3 instances / 1 instance ≥ 0.9", fmt.Sprintf("%.2f×", delivered), delivered >= 0.9},
		{"PostgreSQL queue: no errors, every accepted message delivered", fmt.Sprintf("%d errors, %d undelivered", errs, lost), errs == 0 && lost == 0},
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
