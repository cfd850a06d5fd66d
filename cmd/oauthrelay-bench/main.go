// Command oauthrelay-bench measures the relay against the direct path to
// the provider, in the same run, on loopback: it starts the sandbox
// provider (token endpoint and SMTP server) in-process and the built relay
// binary as a child process, then drives both with concurrent SMTP
// clients. It prints one table and writes it as JSON for comparing runs.
//
//	make bench        (or: go run ./cmd/oauthrelay-bench -relay bin/oauthrelay)
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

const (
	account  = "bench@example.com"
	clientID = "bench-client"
	password = "bench-password"
	body     = "Subject: benchmark\r\nFrom: bench@example.com\r\n\r\nA short benchmark message body.\r\n"
)

// The rows of the direct scenarios.
const (
	directReuseName = "direct, connection reuse"
	directNewName   = "direct, new connection per message"
	relayReuseName  = "relay, connection reuse"
	relayNewName    = "relay, new connection per message"
)

type scenario struct {
	Name       string  `json:"name"`
	Clients    int     `json:"clients"`
	Messages   int     `json:"messages"`
	Errors     int     `json:"errors"`
	PerSecond  float64 `json:"msgs_per_second"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	RelayRatio float64 `json:"relay_to_direct_ratio,omitempty"`
	// ModeRatio, for the queue rows, is the ratio to the relay with
	// delivery = "direct" (connection reuse) in the same run.
	ModeRatio float64 `json:"queue_to_direct_mode_ratio,omitempty"`
	// Relay process cost over the scenario (relay scenarios only).
	CPUSecondsPer1000 float64 `json:"relay_cpu_seconds_per_1000,omitempty"`
	RelayRSSMB        float64 `json:"relay_rss_mb,omitempty"`
	// CPU cores kept busy over the scenario by the relay and by the bench
	// process (its clients and the sandbox provider): on a small machine
	// they compete for the same cores.
	RelayCores float64 `json:"relay_cores,omitempty"`
	// The relay's write(2) and read(2) calls per message (-count-syscalls).
	WritesPerMsg float64 `json:"relay_writes_per_msg,omitempty"`
	ReadsPerMsg  float64 `json:"relay_reads_per_msg,omitempty"`
	BenchCores   float64 `json:"bench_cores"`

	// start and end of the measured period (after the warm-up).
	start, end time.Time
}

type idleResult struct {
	Accounts  int     `json:"accounts"`
	RSSMB     float64 `json:"idle_rss_mb"`
	LoadMs    float64 `json:"start_to_listening_ms"`
	ReloadMs  float64 `json:"reload_ms"`
	ConfigKiB float64 `json:"config_kib"`
}

type report struct {
	Date     string `json:"date"`
	Clients  int    `json:"clients"`
	Duration string `json:"duration_per_scenario"`
	// LoadAverage is /proc/loadavg when the run started: other work on
	// the machine shows up in the numbers.
	LoadAverage string `json:"load_average_at_start"`
	// Pipelining: the relay's clients pipelined (-pipelining).
	Pipelining    bool         `json:"relay_clients_pipeline"`
	Scenarios     []scenario   `json:"scenarios"`
	TokenRequests int          `json:"token_requests_for_the_account"`
	TokenTTL      string       `json:"access_token_lifetime"`
	Queue         *queueResult `json:"queue,omitempty"`
	// Floor: a bare SMTP server answering at once and after an fdatasync:
	// what a durable 250 costs a server that does nothing else.
	Floor *floorResult `json:"floor,omitempty"`
	// Latency: the provider, the relay in direct mode and the queue
	// again, with the provider answering DATA after a delay.
	Latency *latencyResult `json:"provider_data_delay,omitempty"`
	// Shared: the queue on one PostgreSQL database, 1 and 3 instances.
	Shared  []instancesResult `json:"shared_database,omitempty"`
	Idle    []idleResult      `json:"idle"`
	Targets []target          `json:"targets"`
}

type target struct {
	What string `json:"what"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func main() {
	relayBin := flag.String("relay", "bin/oauthrelay", "relay binary to measure")
	clients := flag.Int("clients", 16, "concurrent SMTP clients")
	duration := flag.Duration("duration", 5*time.Second, "length of each throughput scenario")
	out := flag.String("out", "bench-results.json", "where to write the JSON report")
	idle := flag.String("idle-accounts", "1000,10000", "account counts for the idle memory and reload measurements")
	workers := flag.Int("queue-workers", 0, "queue { workers } of the store-and-forward relay (0: the relay's default)")
	queueOnly := flag.Bool("queue-only", false, "measure only the provider and the relay in direct mode, both with connection reuse, and the store-and-forward relay")
	sharedOnly := flag.Bool("shared-only", false, "measure only the store-and-forward relay on PostgreSQL, one instance against three on the same database")
	pipelining := flag.Bool("pipelining", false, "the relay's clients pipeline MAIL, RCPT and DATA (RFC 2920), as Postfix and msmtp do, instead of waiting for each reply (the relay and queue rows with connection reuse)")
	flag.BoolVar(&countIO, "count-syscalls", false, "count the relay's write(2) and read(2) calls per message in the relay scenarios (needs perf, as the fsync counts do)")
	dataDelay := flag.Duration("provider-data-delay", 20*time.Millisecond, "measure the provider, the relay in direct mode and the store-and-forward relay once more with the sandbox provider answering each message's final dot after this delay, as real providers take a while (0: skip)")
	flag.Parse()
	o := options{relayBin: *relayBin, clients: *clients, duration: *duration, out: *out, idleCounts: *idle, queueWorkers: *workers, queueOnly: *queueOnly, sharedOnly: *sharedOnly, dataDelay: *dataDelay, pipelining: *pipelining}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line's settings.
type options struct {
	relayBin     string
	clients      int
	duration     time.Duration
	out          string
	idleCounts   string
	queueWorkers int
	queueOnly    bool
	sharedOnly   bool
	dataDelay    time.Duration // the provider's delay at DATA of the latency scenarios
	pipelining   bool          // the relay's clients pipeline (RFC 2920)
}

// bench is one run: the sandbox provider and what the scenarios share.
type bench struct {
	options
	sb     *devsandbox.Sandbox
	dir    string
	caFile string
	rep    report
}

func run(o options) error {
	if _, err := os.Stat(o.relayBin); err != nil {
		return fmt.Errorf("relay binary: %w (run make build)", err)
	}
	sb, err := devsandbox.Start(devsandbox.Options{})
	if err != nil {
		return err
	}
	defer sb.Close()
	const tokenTTL = time.Hour
	sb.Tokens.SetAccessTokenTTL(tokenTTL)
	sb.Tokens.AddClient(clientID, "bench-secret")
	dir, err := os.MkdirTemp("", "oauthrelay-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{options: o, sb: sb, dir: dir, caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(b.caFile, sb.CA.PEM, 0o600); err != nil {
		return err
	}
	b.rep = report{Date: time.Now().UTC().Format(time.RFC3339), Clients: o.clients, Duration: o.duration.String(), TokenTTL: tokenTTL.String(), LoadAverage: loadAverage(), Pipelining: o.pipelining}
	if err := b.scenarios(); err != nil {
		return err
	}
	b.rep.Targets = targets(b.rep)
	print(b.rep)
	out, _ := json.MarshalIndent(b.rep, "", "  ")
	return os.WriteFile(o.out, append(out, '\n'), 0o644)
}

// scenarios runs the measurements in order: the provider directly (the
// limit for anything in front of it), the relay delivering directly, the
// relay storing and forwarding, the idle relay.
func (b *bench) scenarios() error {
	if b.sharedOnly {
		return b.sharedScenarios()
	}
	direct := directPath(b.sb, b.caFile, b.sb.Tokens.IssueRefreshToken(clientID, account, config.GoogleScope))
	reuseDirect := measure(directReuseName, b.clients, b.duration, nil, direct.reuse)
	b.rep.Scenarios = []scenario{reuseDirect}
	newDirect := scenario{}
	if !b.queueOnly {
		newDirect = measure(directNewName, b.clients, b.duration, nil, direct.perMessage)
	}
	reuseRelay, err := b.relayScenarios(reuseDirect, newDirect)
	if err != nil {
		return err
	}
	if !b.queueOnly {
		if err := b.graphScenarios(); err != nil {
			return err
		}
	}
	if b.rep.Floor, err = b.floorRows(reuseDirect, reuseRelay); err != nil {
		return err
	}
	q, err := b.queueRows("", reuseDirect, reuseRelay)
	if err != nil {
		return err
	}
	b.rep.Queue = &q
	if err := b.latencyScenarios(direct); err != nil {
		return err
	}
	if b.queueOnly {
		return nil
	}
	if err := b.sharedScenarios(); err != nil {
		return err
	}
	return b.idleScenarios()
}

// relayScenarios measures the relay with delivery = "direct": with
// connection reuse (returned: the queue rows are compared with it), and,
// unless -queue-only, with a new connection per message.
func (b *bench) relayScenarios(reuseDirect, newDirect scenario) (scenario, error) {
	requestsBefore := b.sb.Tokens.Requests(account)
	relay, err := b.startDirectRelay()
	if err != nil {
		return scenario{}, err
	}
	viaRelay := relayPath(relay.addr)
	if prof := os.Getenv("BENCH_CPU_PROFILE"); prof != "" {
		// With OAUTHRELAY_PPROF=1 in the environment, profile the relay
		// during the connection-reuse scenario.
		go profile(relay.telemetry, prof, b.duration-time.Second)
	}
	reuseRelay := measure(relayReuseName, b.clients, b.duration, relay, b.relayClient(relay.addr))
	reuseRelay.RelayRatio = reuseRelay.PerSecond / reuseDirect.PerSecond
	if b.queueOnly {
		relay.stop()
		b.rep.Scenarios = append(b.rep.Scenarios, reuseRelay)
		return reuseRelay, nil
	}
	newRelay := measure(relayNewName, b.clients, b.duration, relay, viaRelay.perMessage)
	newRelay.RelayRatio = newRelay.PerSecond / newDirect.PerSecond
	relay.stop()
	b.rep.Scenarios = append(b.rep.Scenarios, reuseRelay, newDirect, newRelay)
	b.rep.TokenRequests = b.sb.Tokens.Requests(account) - requestsBefore
	return reuseRelay, nil
}

// startDirectRelay starts the relay with delivery = "direct" in front of
// the sandbox provider.
func (b *bench) startDirectRelay() (*relayProc, error) {
	relayRT := b.sb.Tokens.IssueRefreshToken(clientID, account, config.GoogleScope)
	cfgPath, addr, tel := relayConfig(b.sb, b.caFile, relayRT, b.dir, 1, "warn", nil)
	relay, err := startRelayAt(b.relayBin, cfgPath, addr)
	if err != nil {
		return nil, err
	}
	relay.telemetry = tel
	return relay, nil
}

// relayClient is how the relay's clients send in the connection-reuse
// rows: one command at a time, or pipelining (-pipelining).
func (b *bench) relayClient(addr string) sendFn {
	if b.pipelining {
		return pipelinedPath(addr).reuse
	}
	return relayPath(addr).reuse
}

// queueRows measures the store-and-forward relay (rows named with label)
// and compares its rows with the provider and the relay in direct mode.
func (b *bench) queueRows(label string, provider, directMode scenario) (queueResult, error) {
	q, err := queueRun(b.relayBin, b.dir, b.sb, b.caFile, b.clients, b.duration, b.queueWorkers, label, b.relayClient)
	if err != nil {
		return q, err
	}
	for _, row := range []*scenario{&q.Accept, &q.EndToEnd} {
		row.RelayRatio = row.PerSecond / provider.PerSecond
		row.ModeRatio = row.PerSecond / directMode.PerSecond
	}
	b.rep.Scenarios = append(b.rep.Scenarios, q.Accept, q.EndToEnd)
	return q, nil
}

func (b *bench) idleScenarios() error {
	for _, f := range strings.Split(b.idleCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			continue
		}
		res, err := idleRun(b.relayBin, b.dir, b.sb, b.caFile, n)
		if err != nil {
			return err
		}
		b.rep.Idle = append(b.rep.Idle, res)
	}
	return nil
}

// ---- measuring ----

// sendFn sends one message; state is per client goroutine.
type sendFn func(state *clientState) error

type clientState struct {
	relay  *smtp.Client
	piped  *pipeClient
	direct *upstream.Conn
	// mailbox is the client's own sender where the scenario has one per
	// client (Graph).
	mailbox string
}

func (c *clientState) close() {
	if c.relay != nil {
		c.relay.Quit()
	}
	if c.piped != nil {
		c.piped.quit()
	}
	if c.direct != nil {
		c.direct.Close()
	}
}

func measure(name string, clients int, d time.Duration, relay *relayProc, send sendFn) scenario {
	return measureAfter(name, clients, d, relay, send, nil)
}

// measureAfter is measure with a step between the warm-up and the start
// of the clock (nil: none).
func measureAfter(name string, clients int, d time.Duration, relay *relayProc, send sendFn, warmedUp func()) scenario {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errCount  atomic.Int64
		wg        sync.WaitGroup
	)
	// Warm up: every client connects and sends one message before the
	// clock starts, so that steady state is measured (first logins, TLS
	// session set-up and token fetches are not).
	states := make([]*clientState, clients)
	for i := range states {
		states[i] = &clientState{}
		_ = send(states[i])
	}
	if warmedUp != nil {
		warmedUp()
	}
	syscalls := startIO(relay)
	var cpuBefore float64
	if relay != nil {
		cpuBefore = relay.cpuSeconds()
	}
	benchBefore := selfCPUSeconds()
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(st *clientState) {
			defer wg.Done()
			defer func() { st.close() }()
			var local []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := send(st); err != nil {
					errCount.Add(1)
					st.close()
					st = &clientState{}
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}(states[i])
	}
	wg.Wait()
	end := time.Now()
	elapsed := end.Sub(start)
	s := scenario{Name: name, Clients: clients, Messages: len(latencies), Errors: int(errCount.Load()), start: start, end: end}
	s.PerSecond = float64(len(latencies)) / elapsed.Seconds()
	s.P50ms, s.P99ms = quantile(latencies, 0.50), quantile(latencies, 0.99)
	s.BenchCores = (selfCPUSeconds() - benchBefore) / elapsed.Seconds()
	if relay != nil && len(latencies) > 0 {
		relayCPU := relay.cpuSeconds() - cpuBefore
		s.CPUSecondsPer1000 = relayCPU / float64(len(latencies)) * 1000
		s.RelayCores = relayCPU / elapsed.Seconds()
		s.RelayRSSMB = relay.rssMB()
	}
	syscalls.done(&s)
	fmt.Fprintf(os.Stderr, "  %-40s %8.0f msgs/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", name, s.PerSecond, s.P50ms, s.P99ms, s.Errors)
	return s
}

func quantile(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	idx := int(float64(len(d)-1) * q)
	return float64(d[idx].Microseconds()) / 1000
}

// ---- the two paths ----

type path struct {
	reuse, perMessage sendFn
	// dial opens an authenticated connection (relay paths only).
	dial func() (*smtp.Client, error)
}

// staticToken serves one access token, as a client of the provider that
// already has one would.
type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }
func (s staticToken) Invalidate(string)                     {}

func directPath(sb *devsandbox.Sandbox, caFile, rt string) path {
	tok := fetchToken(sb, rt)
	sender := upstream.NewSender(upstream.Settings{
		Address:   sb.SMTP.Addr,
		TLSConfig: &tls.Config{RootCAs: sb.CA.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		LocalName: "bench.local",
	}, account, staticToken(tok), nil)
	sendOn := func(c *upstream.Conn) error {
		if err := c.Mail(account, nil); err != nil {
			return err
		}
		if err := c.Rcpt("rcpt@example.net", nil); err != nil {
			return err
		}
		_, err := c.Data(strings.NewReader(body))
		return err
	}
	return path{
		reuse: func(st *clientState) error {
			if st.direct == nil {
				c, err := sender.Open(context.Background())
				if err != nil {
					return err
				}
				st.direct = c
			}
			return sendOn(st.direct)
		},
		perMessage: func(*clientState) error {
			c, err := sender.Open(context.Background())
			if err != nil {
				return err
			}
			defer c.Close()
			return sendOn(c)
		},
	}
}

// fetchToken gets an access token the way the relay does, for the direct
// clients (these requests are not counted against the relay).
func fetchToken(sb *devsandbox.Sandbox, rt string) string {
	src := oauth.NewSource(oauth.Settings{
		Name:         "direct",
		Flow:         config.FlowRefreshToken,
		TokenURL:     sb.Tokens.URL,
		ClientID:     clientID,
		ClientSecret: func() (string, error) { return "bench-secret", nil },
		RefreshToken: func() (string, error) { return rt, nil },
		HTTPClient:   oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: sb.CA.Pool}),
	})
	tok, err := src.Token(context.Background())
	if err != nil {
		panic(err)
	}
	return tok
}

func relayPath(addr string) path {
	dial := func() (*smtp.Client, error) {
		c, err := smtp.Dial(addr)
		if err != nil {
			return nil, err
		}
		if err := c.Hello("bench.local"); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Auth(sasl.NewPlainClient("", "bench", password)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	sendOn := func(c *smtp.Client) error {
		return c.SendMail(account, []string{"rcpt@example.net"}, strings.NewReader(body))
	}
	return path{
		dial: dial,
		reuse: func(st *clientState) error {
			if st.relay == nil {
				c, err := dial()
				if err != nil {
					return err
				}
				st.relay = c
			}
			return sendOn(st.relay)
		},
		perMessage: func(*clientState) error {
			c, err := dial()
			if err != nil {
				return err
			}
			defer c.Quit()
			return sendOn(c)
		},
	}
}

// ---- the relay process ----

type relayProc struct {
	cmd       *exec.Cmd
	addr      string
	telemetry string
	logs      *lockedBuffer
}

func profile(telemetryAddr, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", telemetryAddr, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// relayConfig writes a configuration with the benchmark account and
// accounts-1 more. Throughput runs log at warn (a line per message would
// measure the terminal); the idle runs at info, to read the reload time.
// With queue settings the listener stores and forwards (delivery =
// "queue"); nil: it delivers directly.
func relayConfig(sb *devsandbox.Sandbox, caFile, rt, dir string, accounts int, logLevel string, q *queueSettings) (cfgPath, smtpAddr, telemetryAddr string) {
	hash, _ := passwd.Hash(passwd.Bcrypt, password, passwd.DefaultBcryptCost)
	addr := freeAddr()
	var b strings.Builder
	tel := freeAddr()
	delivery := "direct"
	if q != nil {
		delivery = "queue"
		if q.postgres != "" {
			fmt.Fprintf(&b, "store {\n  postgres {\n    dsn = %q\n    expected_instances = %d\n  }\n}\n", q.postgres, q.instances)
		} else {
			fmt.Fprintf(&b, "store {\n  path = %q\n}\n", q.storeDir)
		}
		if q.workers > 0 {
			fmt.Fprintf(&b, "queue {\n  workers = %d\n}\n", q.workers)
		}
	}
	fmt.Fprintf(&b, `server {
  log_level  = %q
  log_format = "json"
}
telemetry { address = %q }
listener "bench" {
  address                = %q
  tls_mode               = "none"
  max_connections_per_ip = 0
  delivery               = %q
}
provider "sandbox" {
  preset          = "custom"
  token_url       = %q
  smtp_address    = %q
  ca_file         = %q
  max_connections = 32
}
account_group "bench" {
  provider      = "sandbox"
  client_id     = %q
  client_secret = "bench-secret"
  account %q { refresh_token = %q }
`, logLevel, tel, addr, delivery, sb.Tokens.URL, sb.SMTP.Addr, caFile, clientID, account, rt)
	for i := 1; i < accounts; i++ {
		fmt.Fprintf(&b, "  account \"user%05d@example.com\" { refresh_token = \"rt-%05d\" }\n", i, i)
	}
	fmt.Fprintf(&b, "  client \"bench\" {\n    password_hash   = %q\n    allowed_senders = [%q]\n  }\n}\n", hash, account)
	name := ""
	if q != nil {
		name = q.name
	}
	path := filepath.Join(dir, fmt.Sprintf("relay-%s-%d%s.hcl", delivery, accounts, name))
	_ = os.WriteFile(path, []byte(b.String()), 0o600)
	return path, addr, tel
}

func startRelayAt(bin, cfgPath, addr string) (*relayProc, error) {
	logs := &lockedBuffer{}
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, addr: addr, logs: logs}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("relay did not start: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *relayProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// loadAverage is the 1, 5 and 15 minute load averages of the machine.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// selfCPUSeconds is the user+system CPU time of the bench process.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// cpuSeconds reads user+system CPU time of the relay from /proc.
func (p *relayProc) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func (p *relayProc) rssMB() float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// idleRun starts the relay with n accounts, measures start-up time and idle
// memory, then a reload.
func idleRun(bin, dir string, sb *devsandbox.Sandbox, caFile string, n int) (idleResult, error) {
	rt := sb.Tokens.IssueRefreshToken(clientID, account, config.GoogleScope)
	cfgPath, addr, _ := relayConfig(sb, caFile, rt, dir, n, "info", nil)
	st, _ := os.Stat(cfgPath)
	t0 := time.Now()
	p, err := startRelayAt(bin, cfgPath, addr)
	if err != nil {
		return idleResult{}, err
	}
	defer p.stop()
	load := time.Since(t0)
	time.Sleep(2 * time.Second) // let the heap settle after start-up
	res := idleResult{Accounts: n, RSSMB: p.rssMB(), LoadMs: float64(load.Microseconds()) / 1000, ConfigKiB: float64(st.Size()) / 1024}
	before := strings.Count(p.logs.String(), "configuration reloaded")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(p.logs.String(), "configuration reloaded") == before {
		if time.Now().After(deadline) {
			return res, errors.New("reload not logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.ReloadMs = reloadTook(p.logs.String())
	fmt.Fprintf(os.Stderr, "  idle with %5d accounts: RSS %.1f MB, start %.0f ms, reload %.0f ms\n", n, res.RSSMB, res.LoadMs, res.ReloadMs)
	return res, nil
}

// reloadTook extracts the duration of the last reload from the JSON log.
func reloadTook(logs string) float64 {
	var ms float64
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "configuration reloaded") {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		switch v := rec["took"].(type) {
		case float64: // hclog writes durations as nanoseconds in JSON
			ms = v / 1e6
		case string:
			if d, err := time.ParseDuration(v); err == nil {
				ms = float64(d.Microseconds()) / 1000
			}
		}
	}
	return ms
}

// ---- report ----

func targets(r report) []target {
	s := map[string]scenario{}
	for _, sc := range r.Scenarios {
		s[sc.Name] = sc
	}
	var out []target
	if _, ok := s[relayNewName]; ok { // not with -queue-only
		out = relayTargets(r, s)
	}
	if r.Queue != nil {
		out = append(out, queueTargets(*r.Queue, s[queueAcceptName], s[queueE2EName])...)
	}
	if l := r.Latency; l != nil {
		out = append(out, latencyTargets(*l)...)
	}
	out = append(out, sharedTargets(r.Shared)...)
	for _, i := range r.Idle {
		if i.Accounts == 10000 {
			out = append(out,
				target{"10,000 accounts idle < 150 MB RSS", fmt.Sprintf("%.1f MB", i.RSSMB), i.RSSMB < 150},
				target{"10,000 accounts reload < 1 s", fmt.Sprintf("%.0f ms", i.ReloadMs), i.ReloadMs < 1000})
		}
	}
	return out
}

// relayTargets are the goals for the relay with delivery = "direct".
func relayTargets(r report, s map[string]scenario) []target {
	reuseD, reuseR := s[directReuseName], s[relayReuseName]
	newD, newR := s[directNewName], s[relayNewName]
	errs := reuseD.Errors + reuseR.Errors + newD.Errors + newR.Errors
	return []target{
		{"(a) relay ≥ 40% of direct throughput, connection reuse", fmt.Sprintf("%.0f%%", 100*reuseR.RelayRatio), reuseR.RelayRatio >= 0.4},
		{"(b) relay faster than direct with a new connection per message", fmt.Sprintf("%.2f×", newR.RelayRatio), newR.RelayRatio > 1},
		{"p99 added latency < 2 ms at 16 clients (connection reuse)", fmt.Sprintf("%.2f ms", reuseR.P99ms-reuseD.P99ms), reuseR.P99ms-reuseD.P99ms < 2},
		{"1 token request per account per token lifetime", fmt.Sprintf("%d", r.TokenRequests), r.TokenRequests == 1},
		{"no errors", fmt.Sprintf("%d", errs), errs == 0},
		graphTarget(s),
	}
}

// graphTarget: the relay in front of Graph, against Graph directly, as (a)
// for SMTP.
func graphTarget(s map[string]scenario) target {
	d, r := s[graphDirectName], s[graphRelayName]
	return target{"relay via Graph ≥ 40% of Graph directly, no errors", fmt.Sprintf("%.0f%%, %d errors", 100*r.RelayRatio, d.Errors+r.Errors), r.RelayRatio >= 0.4 && d.Errors+r.Errors == 0}
}

func print(r report) {
	fmt.Printf("\noauthrelay benchmark, %s, %d clients, %s per scenario, load average at start %s\n", r.Date, r.Clients, r.Duration, r.LoadAverage)
	if r.Pipelining {
		fmt.Println("the relay's clients pipeline MAIL, RCPT and DATA (RFC 2920) in the connection-reuse rows")
	}
	fmt.Println()
	width := 38 // the longest row name
	for _, s := range r.Scenarios {
		width = max(width, len(s.Name))
	}
	fmt.Printf("%-*s %10s %9s %9s %8s %12s %9s %7s %12s\n", width, "scenario", "msgs/s", "p50 ms", "p99 ms", "ratio", "CPU s/1000", "RSS MB", "errors", "cores r+b")
	for _, s := range r.Scenarios {
		ratio, cpu, rss := "", "", ""
		if s.RelayRatio > 0 {
			ratio = fmt.Sprintf("%.2f", s.RelayRatio)
			cpu = fmt.Sprintf("%.3f", s.CPUSecondsPer1000)
			rss = fmt.Sprintf("%.1f", s.RelayRSSMB)
		}
		p50, p99 := fmt.Sprintf("%.2f", s.P50ms), fmt.Sprintf("%.2f", s.P99ms)
		if s.Messages > 0 && s.P50ms == 0 && s.P99ms == 0 {
			p50, p99 = "", "" // a rate without per-message latencies
		}
		fmt.Printf("%-*s %10.0f %9s %9s %8s %12s %9s %7d %5.2f+%.2f\n", width, s.Name, s.PerSecond, p50, p99, ratio, cpu, rss, s.Errors, s.RelayCores, s.BenchCores)
	}
	printIO(r)
	if r.Floor != nil {
		printFloor(*r.Floor)
	}
	if r.Queue != nil {
		printQueue(*r.Queue)
	}
	if r.Latency != nil {
		printLatency(*r.Latency)
	}
	for _, s := range r.Scenarios {
		if s.Name == relayNewName { // the direct relay ran fully (not -queue-only)
			fmt.Printf("\ntoken endpoint requests for the account over the run: %d (token lifetime %s)\n", r.TokenRequests, r.TokenTTL)
		}
	}
	for _, i := range r.Idle {
		fmt.Printf("idle with %5d accounts: RSS %6.1f MB, start-up %6.0f ms, reload %6.0f ms (config %.0f KiB)\n", i.Accounts, i.RSSMB, i.LoadMs, i.ReloadMs, i.ConfigKiB)
	}
	fmt.Println("\ntargets:")
	for _, t := range r.Targets {
		mark := "MET"
		if !t.Met {
			mark = "NOT MET"
		}
		fmt.Printf("  %-8s %-66s %s\n", mark, t.What, t.Got)
	}
}
