package main_test

// The queue's durability promise, with the binary (README `store`,
// `queue` and "Shutdown"): a message that got 250 survives kill -9 at any
// moment and is delivered after the restart; only a message in flight at
// the kill may go out twice. SIGTERM stops within shutdown_timeout and
// leaves the queue to the next run.

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// The provider's latency while the clients send: slow enough that the
// queue has a backlog, so that the kill finds messages at every stage.
const slowProvider = 30 * time.Millisecond

// backlog counts the accepted messages the provider does not have yet.
func backlog(accepted map[string]string, got map[string]int) int {
	n := 0
	for marker := range accepted {
		if got[marker] == 0 {
			n++
		}
	}
	return n
}

// TestKill9LosesNoAcceptedMessage kills the relay with SIGKILL while 16
// clients send to its queue listener and the queue delivers, restarts it
// on the same store, and checks that every message that got 250 reaches
// the provider and that only messages leased (in flight) at the kill went
// out twice. The kill comes early, in the middle of the load, and while
// the queue drains after the clients stopped.
func TestKill9LosesNoAcceptedMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// moment waits for the moment of the kill (the clients may be
		// stopped first).
		moment func(t *testing.T, r *crashRig, l *load)
	}{
		{"early", func(t *testing.T, r *crashRig, l *load) {
			testutil.WaitFor(t, 60*time.Second, "the first 250s and deliveries", func() bool {
				acc, got := l.acceptedNow(), r.delivered()
				return len(acc) >= 5 && len(got) >= 1 && backlog(acc, got) >= 3
			})
		}},
		{"mid", func(t *testing.T, r *crashRig, l *load) {
			testutil.WaitFor(t, 60*time.Second, "a backlog while the clients send", func() bool {
				acc, got := l.acceptedNow(), r.delivered()
				return len(acc) >= 120 && len(got) >= 20 && backlog(acc, got) >= 20
			})
		}},
		{"drain", func(t *testing.T, r *crashRig, l *load) {
			testutil.WaitFor(t, 60*time.Second, "a backlog", func() bool {
				acc, got := l.acceptedNow(), r.delivered()
				return len(acc) >= 120 && backlog(acc, got) >= 100
			})
			l.halt()
			before := len(r.delivered())
			testutil.WaitFor(t, 60*time.Second, "the queue to drain for a while", func() bool {
				return len(r.delivered()) >= before+10
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newCrashRig(t, rigOptions{workers: 4, maxConnections: 4, shutdownTimeout: "10s"})
			r.link.setDelay(slowProvider)
			run := r.start()
			l := r.startLoad(16, 0)
			tc.moment(t, r, l)
			for _, err := range l.errs() {
				t.Errorf("a client failed before the kill: %v", err)
			}
			run.kill9(t)
			l.halt()
			accepted := l.acceptedNow()
			atKill := r.inspect()
			if len(atKill.queued) == 0 {
				t.Fatal("the kill found an empty queue: nothing was at stake")
			}

			r.link.setDelay(0)
			r.drainAndStop(accepted, r.start())
			tl := r.check(accepted, atKill, l.next.Load())
			t.Logf("kill -9 %s: %d × 250, %d queued and %d in flight (leased) at the kill; delivered %d distinct in %d copies: %d duplicates, %d stored without the client seeing 250",
				tc.name, tl.accepted, len(atKill.queued), len(atKill.leased), tl.distinct, tl.copies, tl.duplicates, tl.unconfirmed)
		})
	}
}

// TestSIGTERMWithAFullQueue fills the queue while the provider refuses
// every DATA with 451, stops the relay with SIGTERM (promptly, status 0,
// every message still queued and no lease left), then restarts it with
// the provider healthy: every message is delivered exactly once.
func TestSIGTERMWithAFullQueue(t *testing.T) {
	r := newCrashRig(t, rigOptions{workers: 4, maxConnections: 4, shutdownTimeout: "10s"})
	r.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"})
	run := r.start()
	const total = 160
	l := r.startLoad(16, total)
	l.wait()
	for _, err := range l.errs() {
		t.Errorf("a client failed: %v", err)
	}
	accepted := l.acceptedNow()
	if len(accepted) != total {
		t.Fatalf("%d messages got 250, want %d", len(accepted), total)
	}
	testutil.WaitFor(t, 60*time.Second, "the queue to be refused by the provider", func() bool {
		return r.sb.SMTP.MailCommands() >= 2*r.opts.workers
	})

	start := time.Now()
	if err := run.terminate(t, 10*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	stopped := time.Since(start)
	assertCleanStop(t, run)
	atStop := r.inspect()
	if len(atStop.queued) != total {
		t.Errorf("%d messages queued after the stop, want %d", len(atStop.queued), total)
	}
	attempts := 0
	for marker, id := range accepted {
		e := atStop.queued[marker]
		switch {
		case e == nil:
			t.Errorf("%s (%s) is no longer queued", marker, id)
		case e.ID != id:
			t.Errorf("%s is queued as %s, the client was told %s", marker, e.ID, id)
		default:
			attempts += e.Attempts
		}
	}
	if len(atStop.leased) != 0 {
		t.Errorf("a clean stop left %d leases", len(atStop.leased))
	}
	if n := len(r.sb.SMTP.Messages()); n != 0 {
		t.Fatalf("the refusing provider holds %d messages", n)
	}

	r.sb.SMTP.FailEveryNthData(0, nil)
	r.drainAndStop(accepted, r.start())
	got := r.delivered()
	for marker, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times, want once", marker, n)
		}
	}
	if len(got) != total {
		t.Errorf("the provider got %d distinct messages, want %d", len(got), total)
	}
	t.Logf("SIGTERM with a full queue: %d × 250, %d refused attempts before the stop, stopped in %s; %d delivered after the restart",
		total, attempts, stopped.Round(time.Millisecond), len(got))
}

// TestSIGTERMDuringDelivery stops the relay with SIGTERM while clients
// send and the queue delivers through a slow provider. Within
// shutdown_timeout, the deliveries in flight finish, are recorded and
// leave no lease. Past it (a provider that stops answering), they are
// abandoned: the relay still exits with status 0 and the abandoned
// messages keep their leases for the next run. Either way, after a
// restart every message that got 250 is delivered, and only messages
// still leased at the stop may go out twice.
func TestSIGTERMDuringDelivery(t *testing.T) {
	for _, tc := range []struct {
		name            string
		shutdownTimeout time.Duration
		hang            bool // the provider stops answering before the SIGTERM
	}{
		{"within the timeout", 10 * time.Second, false},
		{"past the timeout", time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newCrashRig(t, rigOptions{workers: 4, maxConnections: 4, shutdownTimeout: tc.shutdownTimeout.String()})
			r.link.setDelay(slowProvider)
			run := r.start()
			l := r.startLoad(16, 0)
			testutil.WaitFor(t, 60*time.Second, "deliveries with a backlog", func() bool {
				acc, got := l.acceptedNow(), r.delivered()
				return len(acc) >= 100 && len(got) >= 10 && backlog(acc, got) >= 20
			})
			if tc.hang {
				// A MAIL the provider reads after this is answered only
				// after the test: its delivery is stuck.
				mails := r.sb.SMTP.MailCommands()
				r.link.setDelay(time.Hour)
				testutil.WaitFor(t, 60*time.Second, "a delivery stuck on the provider", func() bool {
					return r.sb.SMTP.MailCommands() > mails
				})
			}
			for _, err := range l.errs() {
				t.Errorf("a client failed before the stop: %v", err)
			}
			begin := time.Now()
			if err := run.terminate(t, tc.shutdownTimeout); err != nil {
				t.Fatalf("exit after SIGTERM: %v, want status 0", err)
			}
			exitAfter := time.Since(begin)
			l.halt()
			accepted := l.acceptedNow()
			atStop := r.inspect()
			if tc.hang {
				assertAbandoned(t, run)
				if n := len(atStop.leased); n < 1 || n > r.opts.workers {
					t.Errorf("%d messages leased after abandoning the deliveries in flight; want 1 to %d (the workers)", n, r.opts.workers)
				}
			} else {
				assertCleanStop(t, run)
				if len(atStop.leased) != 0 {
					t.Errorf("a clean stop left %d leases", len(atStop.leased))
				}
			}
			deliveredBefore := len(r.delivered())

			r.link.setDelay(0)
			r.drainAndStop(accepted, r.start())
			tl := r.check(accepted, atStop, l.next.Load())
			t.Logf("SIGTERM during delivery, %s: exit %s after the signal (shutdown_timeout %s); %d × 250, %d delivered before the stop, %d queued and %d leased after it; delivered %d distinct in %d copies: %d duplicates, %d stored without the client seeing 250",
				tc.name, exitAfter.Round(time.Millisecond), tc.shutdownTimeout, tl.accepted, deliveredBefore, len(atStop.queued), len(atStop.leased), tl.distinct, tl.copies, tl.duplicates, tl.unconfirmed)
		})
	}
}

// TestSIGTERMWithAHungProvider stops the relay while the provider has
// stopped answering: the queue is empty and the account's pool holds idle
// connections, which the relay says QUIT to on its way out. The relay
// must still exit within shutdown_timeout (plus a margin for a loaded
// machine): a goodbye to a provider that does not answer is not worth a
// stuck stop.
func TestSIGTERMWithAHungProvider(t *testing.T) {
	const shutdownTimeout = time.Second
	r := newCrashRig(t, rigOptions{workers: 8, maxConnections: 8, shutdownTimeout: shutdownTimeout.String()})
	r.link.setDelay(slowProvider) // deliveries overlap: the pool grows
	run := r.start()
	l := r.startLoad(16, 200)
	l.wait()
	accepted := l.acceptedNow()
	testutil.WaitFor(t, 60*time.Second, "an empty queue", func() bool {
		return r.depth() == 0 && len(r.delivered()) >= len(accepted)
	})
	idle := r.link.open()
	if idle < 4 {
		t.Fatalf("%d idle provider connections; the test needs several", idle)
	}
	r.link.setDelay(time.Hour)
	begin := time.Now()
	if err := run.terminate(t, shutdownTimeout); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	took := time.Since(begin)
	t.Logf("%d idle connections to a provider that no longer answers; exit %s after SIGTERM (shutdown_timeout %s)", idle, took.Round(time.Millisecond), shutdownTimeout)
	if margin := 10 * time.Second; took > shutdownTimeout+margin {
		t.Errorf("the relay took %s to exit; shutdown_timeout is %s", took.Round(time.Millisecond), shutdownTimeout)
	}
}

// sessionsPastDeadline is what the relay logs when client sessions are
// still open at the shutdown deadline.
const sessionsPastDeadline = "shutdown deadline reached; answering 421"

// assertCleanStop checks the logs of a stopped relay: neither the
// sessions nor the queue's deliveries ran into shutdown_timeout.
func assertCleanStop(t *testing.T, run *relayRun) {
	t.Helper()
	out := run.logs.String()
	for _, bad := range []string{sessionsPastDeadline, "stop deadline reached", "deliveries unfinished"} {
		if strings.Contains(out, bad) {
			t.Errorf("the stop ran into shutdown_timeout: the logs say %q", bad)
		}
	}
	if !strings.Contains(out, `"@message":"stopped"`) {
		t.Error("no clean stop in the logs")
	}
}

// assertAbandoned checks the logs of a relay whose queue ran into
// shutdown_timeout: it said so, and still stopped.
func assertAbandoned(t *testing.T, run *relayRun) {
	t.Helper()
	out := run.logs.String()
	for _, want := range []string{"stop deadline reached", "deliveries unfinished", `"@message":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the logs do not say %q", want)
		}
	}
	if strings.Contains(out, sessionsPastDeadline) {
		t.Error("the sessions ran into shutdown_timeout; only the queue should have")
	}
}
