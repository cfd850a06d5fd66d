package main_test

// The rig of the queue's crash tests: the relay binary with a queue
// listener and a store, in front of the sandbox provider reached through a
// link whose latency the test sets; clients that send uniquely marked
// messages; and a look into the store between two runs.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql's "pgx" driver: the leases of a shared store

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/postgres"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// slowLink is a TCP relay between the relay and the sandbox provider that
// holds every chunk the provider sends for the current delay: a provider
// slow enough that the queue has a backlog while clients keep sending.
type slowLink struct {
	addr   string
	target string
	ln     net.Listener
	delay  atomic.Int64 // nanoseconds

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newSlowLink(t *testing.T, target string) *slowLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &slowLink{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

// setDelay sets the latency of the provider's replies.
func (l *slowLink) setDelay(d time.Duration) { l.delay.Store(int64(d)) }

func (l *slowLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		if !l.track(c, up) {
			return
		}
		p := &linkPair{client: c, provider: up, gone: make(chan struct{})}
		l.wg.Add(2)
		go l.pipe(p, up, c, false)
		go l.pipe(p, c, up, true)
	}
}

// open counts the connections through the link.
func (l *slowLink) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) / 2
}

func (l *slowLink) track(conns ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		l.conns[c] = struct{}{}
	}
	return true
}

// linkPair is one connection through the link; gone is closed when either
// side ends.
type linkPair struct {
	client, provider net.Conn
	once             sync.Once
	gone             chan struct{}
}

// end closes both connections, so that a relay killed in the middle of a
// message leaves the provider with a broken session, as a real one would.
func (l *slowLink) end(p *linkPair) {
	p.once.Do(func() {
		close(p.gone)
		p.client.Close()
		p.provider.Close()
		l.mu.Lock()
		delete(l.conns, p.client)
		delete(l.conns, p.provider)
		l.mu.Unlock()
	})
}

// pipe copies src to dst, each chunk held for the link's delay when slow.
func (l *slowLink) pipe(p *linkPair, dst, src net.Conn, slow bool) {
	defer l.wg.Done()
	defer l.end(p)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(l.delay.Load()); slow && d > 0 {
				// The simulated latency, not a synchronisation.
				select {
				case <-time.After(d):
				case <-p.gone:
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *slowLink) close() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.Close() // the pipes' reads fail and they end their pairs
	}
	l.mu.Unlock()
	l.ln.Close()
	l.wg.Wait()
}

// rigOptions shape the relay's configuration.
type rigOptions struct {
	workers         int    // queue workers
	maxConnections  int    // the provider's pool cap
	shutdownTimeout string // server shutdown_timeout

	// instances is the number of relay processes (0: one), each with a
	// listener of its own; several need postgres.
	instances int
	// postgres, when set, is the DSN of the shared database the
	// instances use as their store instead of an embedded one.
	postgres string
	lease    string // queue { lease }, "" for the default
	// direct makes the listeners answer after the provider (delivery's
	// default) instead of after the store.
	direct bool
	// ratePerMinute and rateBurst are the account's rate limit (0: none).
	ratePerMinute, rateBurst int
}

// crashRig is one relay configuration with its store, sandbox and link;
// the relay can be started on it any number of times.
type crashRig struct {
	t        *testing.T
	sb       *devsandbox.Sandbox
	link     *slowLink
	opts     rigOptions
	addrs    []string // each instance's listener
	storeDir string
	cfgPaths []string // each instance's configuration
}

const crashPassword = "crash-test-password"

func newCrashRig(t *testing.T, opts rigOptions) *crashRig {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	dir := t.TempDir()
	sb.Tokens.AddClient("relay", "crash-client-secret")
	rt := sb.Tokens.IssueRefreshToken("relay", "alice@example.com", config.GoogleScope)
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	testutil.WriteFile(t, dir, "rt", rt)
	r := &crashRig{t: t, sb: sb, link: newSlowLink(t, sb.SMTP.Addr), opts: opts,
		storeDir: filepath.Join(t.TempDir(), "store")}
	hash := testutil.FastHash(t, crashPassword)
	for i := 0; i < max(opts.instances, 1); i++ {
		addr := testutil.FreeAddr(t)
		r.addrs = append(r.addrs, addr)
		r.cfgPaths = append(r.cfgPaths, testutil.WriteFile(t, dir, fmt.Sprintf("relay-%d.hcl", i), r.config(addr, dir, hash)))
	}
	return r
}

// config is the configuration of the instance listening on addr.
func (r *crashRig) config(addr, dir, hash string) string {
	opts := r.opts
	delivery := `delivery = "queue"`
	if opts.direct {
		delivery = ""
	}
	st := fmt.Sprintf("store { path = %q }", r.storeDir)
	if opts.postgres != "" {
		st = fmt.Sprintf("store {\n  postgres {\n    dsn = %q\n    expected_instances = %d\n  }\n}", opts.postgres, max(opts.instances, 1))
	}
	lease, rate := "", ""
	if opts.lease != "" {
		lease = fmt.Sprintf("lease = %q", opts.lease)
	}
	if opts.ratePerMinute > 0 {
		rate = fmt.Sprintf("rate_limit_per_minute = %d\n    rate_limit_burst = %d", opts.ratePerMinute, opts.rateBurst)
	}
	// The circuits would postpone the account for their open timeout
	// after a run of refusals; these tests are about the queue alone.
	return fmt.Sprintf(`
server {
  log_format       = "json"
  shutdown_timeout = %q
}
listener "queued" {
  address  = %q
  tls_mode = "none"
  %s
  max_connections_per_ip = 0
}
%s
queue {
  workers        = %d
  retry_schedule = ["1s"]
  max_lifetime   = "1h"
  %s
}
provider "sandbox" {
  preset          = "custom"
  token_url       = %q
  smtp_address    = %q
  ca_file         = "%s/ca.pem"
  max_connections = %d
  circuit_failure_threshold = 1000000
  circuit_min_requests      = 1000000
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "crash-client-secret"
  account "alice@example.com" {
    refresh_token = "file://%s/rt"
    %s
  }
  client "app" { password_hash = %q }
}
`, opts.shutdownTimeout, addr, delivery, st, opts.workers, lease, r.sb.Tokens.URL, r.link.addr, dir,
		opts.maxConnections, dir, rate, hash)
}

// relayRun is one run of the relay binary.
type relayRun struct {
	cmd    *exec.Cmd
	logs   *testutil.LogBuffer
	exited chan error
}

// start runs the relay (the first instance) on the rig and waits until
// it listens.
func (r *crashRig) start() *relayRun {
	r.t.Helper()
	return r.startInstance(0)
}

// startInstance runs instance i and waits until it listens.
func (r *crashRig) startInstance(i int) *relayRun {
	r.t.Helper()
	cmd, logs, exited := startRelay(r.t, r.cfgPaths[i])
	run := &relayRun{cmd: cmd, logs: logs, exited: exited}
	testutil.WaitFor(r.t, 30*time.Second, "the relay to listen", func() bool {
		select {
		case err := <-exited:
			r.t.Fatalf("the relay exited at start: %v\n%s", err, logs.String())
		default:
		}
		c, err := net.Dial("tcp", r.addrs[i])
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return run
}

// kill9 kills the relay with SIGKILL and waits for it to be gone.
func (p *relayRun) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if !killedBy(err, syscall.SIGKILL) {
			t.Fatalf("the relay ended before the kill: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the relay survived SIGKILL")
	}
}

// terminate sends SIGTERM and returns the exit error (nil: status 0);
// the relay has shutdown_timeout plus the sessions' grace to stop.
func (p *relayRun) terminate(t *testing.T, shutdownTimeout time.Duration) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		return err
	case <-time.After(shutdownTimeout + 30*time.Second):
		t.Fatalf("the relay did not exit after SIGTERM (shutdown_timeout %s)", shutdownTimeout)
		return nil
	}
}

// load is clients sending uniquely marked messages to the queue listener.
type load struct {
	rig  *crashRig
	max  int64 // messages to send in all; 0: until stopped
	next atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	live     []string          // the listeners the clients send to, in turn
	accepted map[string]string // marker → queue ID, for every 250
	failures []error
}

var queuedAs = regexp.MustCompile(`queued as (\S+)`)

// startLoad starts clients that send until stopped or until max messages
// went out.
func (r *crashRig) startLoad(clients int, max int64) *load {
	l := &load{rig: r, max: max, stop: make(chan struct{}), accepted: map[string]string{},
		live: append([]string(nil), r.addrs...)}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go l.client()
	}
	return l
}

func (l *load) client() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		n := l.next.Add(1)
		if l.max > 0 && n > l.max {
			return
		}
		marker, reply, err := sendMarked(l.target(n), n)
		l.mu.Lock()
		if err != nil {
			l.failures = append(l.failures, err)
		} else if m := queuedAs.FindStringSubmatch(reply); m != nil {
			l.accepted[marker] = m[1]
		} else {
			l.failures = append(l.failures, fmt.Errorf("%s: a 250 without a queue ID: %q", marker, reply))
		}
		l.mu.Unlock()
	}
}

// target is the listener message n goes to: the live ones in turn.
func (l *load) target(n int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[int(n)%len(l.live)]
}

// drop takes addr out of the listeners the clients send to (its
// instance is gone).
func (l *load) drop(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live = slices.DeleteFunc(l.live, func(a string) bool { return a == addr })
}

// sendMarked sends message n, marked "m-n" in its Message-ID and
// Subject, to the listener at addr.
func sendMarked(addr string, n int64) (marker, reply string, err error) {
	marker = fmt.Sprintf("m-%d", n)
	body := fmt.Sprintf("Message-ID: <%s@crash.test>\r\nSubject: %s\r\n\r\nmessage %d\r\n", marker, marker, n)
	reply, err = testutil.Send(addr, testutil.Mail{User: "app", Password: crashPassword,
		From: "alice@example.com", To: []string{"x@example.net"}, Body: body})
	return marker, reply, err
}

// halt stops the clients and waits for their sessions to end.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) wait() { l.wg.Wait() }

// acceptedNow returns a copy of the markers that got 250 so far.
func (l *load) acceptedNow() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.accepted))
	for k, v := range l.accepted {
		out[k] = v
	}
	return out
}

func (l *load) errs() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.failures...)
}

// delivered counts the copies the provider got of each marker.
func (r *crashRig) delivered() map[string]int {
	out := map[string]int{}
	for _, m := range r.sb.SMTP.Messages() {
		out[m.Subject]++
	}
	return out
}

// storeView is what the store holds while no relay runs on it.
type storeView struct {
	queued map[string]*store.Envelope // marker → envelope of every queued message
	leased map[string]string          // marker → ID of every message under a lease (claimed, in flight)
	owners map[string]string          // marker → lease owner of every leased message
}

// leasedBy is the view with only the leases of owner: on a shared
// database, the messages a killed instance had in flight.
func (v storeView) leasedBy(owner string) storeView {
	out := storeView{queued: v.queued, leased: map[string]string{}, owners: map[string]string{}}
	for marker, o := range v.owners {
		if o == owner {
			out.leased[marker], out.owners[marker] = v.leased[marker], o
		}
	}
	return out
}

// openStore opens the rig's store through its own API.
func (r *crashRig) openStore(ctx context.Context) (store.Store, error) {
	if r.opts.postgres != "" {
		return postgres.Open(ctx, r.opts.postgres, postgres.Options{})
	}
	return sqlite.Open(ctx, r.storeDir, sqlite.Options{})
}

// inspect opens the store (between two runs, or beside the running
// instances of a shared database): List through the store's own
// API, and the leases, which the API does not show, from the database.
func (r *crashRig) inspect() storeView {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := r.openStore(ctx)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	envs, err := st.List(ctx, store.Filter{})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("listing the queue: %v", err)
	}
	v := storeView{queued: map[string]*store.Envelope{}, leased: map[string]string{}, owners: map[string]string{}}
	for _, e := range envs {
		v.queued[markerOf(e.HeaderID)] = e
	}
	db := r.openDB()
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT id, header_id, lease_owner FROM messages WHERE lease_owner <> ''`)
	if err != nil {
		t.Fatalf("reading the leases: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, headerID, owner string
		if err := rows.Scan(&id, &headerID, &owner); err != nil {
			t.Fatal(err)
		}
		v.leased[markerOf(headerID)] = id
		v.owners[markerOf(headerID)] = owner
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

// depth counts the messages in the queue; it reads the database beside
// the running relay (WAL lets a reader in while the relay writes).
func (r *crashRig) depth() int {
	r.t.Helper()
	db := r.openDB()
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM messages`).Scan(&n); err != nil {
		r.t.Fatalf("counting the queue: %v", err)
	}
	return n
}

func (r *crashRig) openDB() *sql.DB {
	r.t.Helper()
	if r.opts.postgres != "" {
		db, err := sql.Open("pgx", r.opts.postgres)
		if err != nil {
			r.t.Fatal(err)
		}
		return db
	}
	file := filepath.Join(r.storeDir, sqlite.FileName)
	db, err := sql.Open("sqlite", "file:"+file+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		r.t.Fatal(err)
	}
	return db
}

// markerOf returns the marker of a Message-ID "<m-7@crash.test>".
func markerOf(headerID string) string {
	m, _, _ := strings.Cut(strings.TrimPrefix(headerID, "<"), "@")
	return m
}

// drainAndStop waits until the provider has every message that got 250
// and the queue is empty, then stops the relays with SIGTERM (status 0)
// and checks that the store agrees.
func (r *crashRig) drainAndStop(accepted map[string]string, runs ...*relayRun) {
	t := r.t
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "every accepted message at the provider", func() bool {
		got := r.delivered()
		for marker := range accepted {
			if got[marker] == 0 {
				return false
			}
		}
		return true
	})
	testutil.WaitFor(t, 60*time.Second, "an empty queue", func() bool { return r.depth() == 0 })
	for _, run := range runs {
		if err := run.terminate(t, 10*time.Second); err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	}
	if v := r.inspect(); len(v.queued) != 0 || len(v.leased) != 0 {
		t.Fatalf("after the final stop the store holds %d messages, %d leased", len(v.queued), len(v.leased))
	}
}

// tally compares what the provider got with what was accepted: every
// message that got 250 (and every message the store held at the stop) is
// delivered; only messages in flight at the stop (leased then) may be
// delivered twice.
type tally struct {
	accepted, distinct, copies, duplicates, unconfirmed int
}

func (r *crashRig) check(accepted map[string]string, atStop storeView, sent int64) tally {
	t := r.t
	t.Helper()
	got := r.delivered()
	var tl tally
	tl.accepted, tl.distinct = len(accepted), len(got)
	for marker := range accepted {
		if got[marker] == 0 {
			t.Errorf("%s got 250 (queued as %s) but was never delivered", marker, accepted[marker])
		}
	}
	for marker, e := range atStop.queued {
		if got[marker] == 0 {
			t.Errorf("%s was in the store at the stop (%s) but was never delivered", marker, e.ID)
		}
	}
	for marker, n := range got {
		tl.copies += n
		var k int64
		if _, err := fmt.Sscanf(marker, "m-%d", &k); err != nil || k < 1 || k > sent {
			t.Errorf("the provider got a message no client sent: %q", marker)
		}
		if _, ok := accepted[marker]; !ok {
			tl.unconfirmed++ // stored, but the client was cut off before its 250
		}
		if n > 1 {
			tl.duplicates++
			if _, inFlight := atStop.leased[marker]; !inFlight {
				t.Errorf("%s was delivered %d times but was not in flight at the stop", marker, n)
			}
		}
	}
	if tl.accepted > tl.distinct {
		t.Errorf("%d messages got 250, only %d distinct ones were delivered", tl.accepted, tl.distinct)
	}
	if tl.duplicates > len(atStop.leased) || tl.duplicates > r.opts.workers {
		t.Errorf("%d messages delivered twice; %d were in flight at the stop, the queue has %d workers",
			tl.duplicates, len(atStop.leased), r.opts.workers)
	}
	return tl
}

// killedBy reports whether err is the exit of a process killed by sig.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
