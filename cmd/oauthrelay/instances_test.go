package main_test

// Several relay processes on one PostgreSQL database (README "Several
// instances"): they share the queue (leases that a dead instance's
// survivors take over), the account limits and the mailbox's connection
// cap, so that together they behave like one relay.

import (
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const mailbox = "alice@example.com"

// startAll starts every instance of the rig and returns their runs and
// their names in the database (the owners of their leases).
func (r *crashRig) startAll() ([]*relayRun, []string) {
	r.t.Helper()
	var runs []*relayRun
	var owners []string
	for i := range r.addrs {
		run := r.startInstance(i)
		runs = append(runs, run)
		owners = append(owners, instanceName(r.t, run))
	}
	return runs, owners
}

var sharedOpen = regexp.MustCompile(`"@message":"shared database open"[^\n]*`)
var instanceField = regexp.MustCompile(`"instance":"([^"]+)"`)

// instanceName reads the instance's name from its log line "shared
// database open".
func instanceName(t *testing.T, run *relayRun) string {
	t.Helper()
	var name string
	testutil.WaitFor(t, 10*time.Second, "the instance's name in its logs", func() bool {
		m := instanceField.FindStringSubmatch(sharedOpen.FindString(run.logs.String()))
		if m != nil {
			name = m[1]
		}
		return m != nil
	})
	return name
}

// assertOneMailboxCap checks that the instances together never held more
// provider sessions than the mailbox allows, and were never refused for
// trying.
func assertOneMailboxCap(t *testing.T, r *crashRig, runs []*relayRun, limit int) {
	t.Helper()
	if peak := r.sb.SMTP.PeakSessions(mailbox); peak > limit {
		t.Errorf("the provider saw %d concurrent sessions of the mailbox; the cap is %d", peak, limit)
	}
	if n := r.sb.SMTP.ConcurrencyRefusals(mailbox); n != 0 {
		t.Errorf("the provider refused %d sessions with 432 4.3.2: the instances exceeded the mailbox's %d connections together", n, limit)
	}
	for i, run := range runs {
		if strings.Contains(run.logs.String(), "4.3.2") {
			t.Errorf("instance %d logged a 432 4.3.2 from the provider", i)
		}
	}
}

// TestThreeInstancesKill9LosesNoAcceptedMessage runs three instances on
// one database with 16 clients spread over their queue listeners and a
// slow provider, kills one with SIGKILL while the queue has a backlog,
// keeps the load on the other two, and checks that they deliver
// everything: the dead instance's leases expire and are taken over, only
// the messages it had in flight may go out twice, and the three never
// held more than the mailbox's 3 connections.
func TestThreeInstancesKill9LosesNoAcceptedMessage(t *testing.T) {
	_, dsn := testutil.Postgres(t)
	const mailboxCap = 3
	r := newCrashRig(t, rigOptions{workers: 4, maxConnections: mailboxCap, shutdownTimeout: "10s",
		instances: 3, postgres: dsn, lease: "5s"})
	r.sb.SMTP.SetMaxSessionsPerUser(mailboxCap)
	r.link.setDelay(slowProvider)
	runs, owners := r.startAll()
	l := r.startLoad(16, 0)
	testutil.WaitFor(t, 60*time.Second, "a backlog while the clients send", func() bool {
		acc, got := l.acceptedNow(), r.delivered()
		return len(acc) >= 60 && len(got) >= 10 && backlog(acc, got) >= 20
	})
	for _, err := range l.errs() {
		t.Errorf("a client failed before the kill: %v", err)
	}
	const victim = 1
	runs[victim].kill9(t)
	l.drop(r.addrs[victim])
	killedAt := time.Now()
	atKill := r.inspect().leasedBy(owners[victim])
	if len(atKill.queued) == 0 {
		t.Fatal("the kill found an empty queue: nothing was at stake")
	}
	more := len(l.acceptedNow()) + 30
	testutil.WaitFor(t, 30*time.Second, "the survivors to accept more", func() bool { return len(l.acceptedNow()) >= more })
	l.halt()
	accepted := l.acceptedNow()

	r.link.setDelay(0)
	survivors := []*relayRun{runs[0], runs[2]}
	r.drainAndStop(accepted, survivors...)
	drained := time.Since(killedAt)
	for _, run := range survivors {
		assertCleanStop(t, run)
	}
	tl := r.check(accepted, atKill, l.next.Load())
	assertOneMailboxCap(t, r, runs, mailboxCap)
	t.Logf("kill -9 of 1 of 3 instances: %d × 250, %d queued and %d leased by the dead instance at the kill; all delivered %s after the kill; %d distinct in %d copies: %d duplicates, %d stored without the client seeing 250; peak %d provider sessions",
		tl.accepted, len(atKill.queued), len(atKill.leased), drained.Round(time.Millisecond), tl.distinct, tl.copies, tl.duplicates, tl.unconfirmed, r.sb.SMTP.PeakSessions(mailbox))
}

// burst sends n marked messages at once, spread over the rig's
// listeners, and returns each one's reply or error by marker.
func (r *crashRig) burst(n int) map[string]error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]error{}
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			marker, _, err := sendMarked(r.addrs[int(i)%len(r.addrs)], i)
			mu.Lock()
			out[marker] = err
			mu.Unlock()
		}(int64(i))
	}
	wg.Wait()
	return out
}

// isRateLimitReply reports whether err is the relay's reply to a message
// over the account's rate limit: 451 4.7.0 naming the limit.
func isRateLimitReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code == 451 && se.EnhancedCode == smtp.EnhancedCode{4, 7, 0} &&
		strings.Contains(se.Message, "rate_per_minute")
}

// replyCode is the SMTP code of a refusal (0: not an SMTP reply).
func replyCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// TestThreeInstancesShareTheRateLimit fires 12 messages at once at three
// direct-mode instances of an account limited to 6 a minute with a burst
// of 3: the three instances together send 3, not 3 each, and refuse the
// rest with the account limit's 451 4.7.0.
func TestThreeInstancesShareTheRateLimit(t *testing.T) {
	_, dsn := testutil.Postgres(t)
	r := newCrashRig(t, rigOptions{workers: 4, maxConnections: 3, shutdownTimeout: "10s",
		instances: 3, postgres: dsn, direct: true, ratePerMinute: 6, rateBurst: 3})
	runs, _ := r.startAll()
	start := time.Now()
	replies := r.burst(12)
	took := time.Since(start)
	var sent []string
	for marker, err := range replies {
		switch {
		case err == nil:
			sent = append(sent, marker)
		case !isRateLimitReply(err):
			t.Errorf("%s: %v; want 250 or the rate limit's 451 4.7.0", marker, err)
		}
	}
	if len(sent) != 3 {
		t.Errorf("%d of 12 messages got 250 within %s; the shared burst is 3", len(sent), took.Round(time.Millisecond))
	}
	got := r.delivered()
	for _, marker := range sent {
		if got[marker] != 1 {
			t.Errorf("%s got 250; the provider has %d copies", marker, got[marker])
		}
	}
	if len(got) != len(sent) {
		t.Errorf("the provider has %d distinct messages; %d got 250", len(got), len(sent))
	}
	for _, run := range runs {
		if err := run.terminate(t, 10*time.Second); err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	}
	t.Logf("12 messages at once over 3 instances in %s: %d × 250, %d refused by the shared rate limit", took.Round(time.Millisecond), len(sent), len(replies)-len(sent))
}

// TestThreeInstancesShareTheConnectionCap keeps 24 clients sending to
// three direct-mode instances of a mailbox that allows 3 connections:
// together they never open more, every client gets 250 or a temporary
// refusal, and most get 250.
func TestThreeInstancesShareTheConnectionCap(t *testing.T) {
	_, dsn := testutil.Postgres(t)
	const mailboxCap = 3
	r := newCrashRig(t, rigOptions{workers: 4, maxConnections: mailboxCap, shutdownTimeout: "10s",
		instances: 3, postgres: dsn, direct: true})
	r.sb.SMTP.SetMaxSessionsPerUser(mailboxCap)
	r.link.setDelay(slowProvider)
	runs, _ := r.startAll()
	codes := map[int]int{}
	var others []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	var next atomic.Int64
	deadline := time.Now().Add(4 * time.Second)
	for c := 0; c < 24; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				n := next.Add(1)
				_, _, err := sendMarked(r.addrs[int(n)%len(r.addrs)], n)
				code := 250
				if err != nil {
					code = replyCode(err)
				}
				mu.Lock()
				codes[code]++
				if code == 0 || code >= 500 {
					others = append(others, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range others {
		t.Errorf("a client got neither 250 nor a temporary refusal: %v", err)
	}
	total := 0
	for _, n := range codes {
		total += n
	}
	if codes[250]*2 < total {
		t.Errorf("only %d of %d messages got 250 (replies by code: %v)", codes[250], total, codes)
	}
	if got := len(r.sb.SMTP.Messages()); got != codes[250] {
		t.Errorf("the provider has %d messages; %d got 250", got, codes[250])
	}
	assertOneMailboxCap(t, r, runs, mailboxCap)
	for _, run := range runs {
		if err := run.terminate(t, 10*time.Second); err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	}
	t.Logf("24 clients over 3 instances for 4s: replies by code %v; peak %d provider sessions", codes, r.sb.SMTP.PeakSessions(mailbox))
}
