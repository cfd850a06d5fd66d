package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	qAlice  = "alice@example.com"
	qBob    = "bob@example.com"
	qClient = "app"
	// waitLong bounds every wait for the relay: generous for -race on a
	// busy two-core machine; each wait ends as soon as its condition holds.
	waitLong = 60 * time.Second
)

// busy is the provider's reply to every DATA while the tests keep
// messages queued.
var busy = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mailbox busy, try again later"}

// queueRelay is a relay running in-process in front of the sandbox
// provider, with a direct and a queue listener and a store; the `queue`
// commands under test open that store while the relay runs.
type queueRelay struct {
	t                *testing.T
	sb               *devsandbox.Sandbox
	config, storeDir string
	direct, queued   string
	password         string
	logs             *testutil.LogBuffer
	st               *sqlite.Store // the test's own view of the store, for awaiting

	mu      sync.Mutex
	secrets []string // secrets and body markers: in no log and no command output
	outputs []string // everything the commands printed
}

func startQueueRelay(t *testing.T, retrySchedule string) *queueRelay {
	t.Helper()
	r := &queueRelay{t: t, logs: &testutil.LogBuffer{}, password: "pw-" + randomHex(t), storeDir: filepath.Join(t.TempDir(), "store")}
	r.sb = testutil.Sandbox(t, devsandbox.Options{Logger: r.logs.Logger(t).Named("sandbox")})
	clientSecret := "cs-" + randomHex(t)
	r.sb.Tokens.AddClient("relay", clientSecret)
	dir := t.TempDir()
	refresh := map[string]string{}
	for _, a := range []string{qAlice, qBob} {
		rt := r.sb.Tokens.IssueRefreshToken("relay", a, config.GoogleScope)
		refresh[a] = testutil.WriteFile(t, dir, "rt-"+a, rt)
		r.secrets = append(r.secrets, rt)
	}
	r.secrets = append(r.secrets, clientSecret, r.password)
	r.config = testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
server { hostname = "relay.test" }
listener "direct" {
  address                = "127.0.0.1:0"
  tls_mode               = "none"
  max_connections_per_ip = 0
}
listener "queued" {
  address                = "127.0.0.2:0" # another loopback address: port 0 twice is refused
  tls_mode               = "none"
  max_connections_per_ip = 0
  delivery               = "queue"
}
store { path = %q }
queue { retry_schedule = %s }
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = %q
  # The provider refuses on purpose here; open circuits would postpone
  # the attempts the tests count.
  circuit_failure_threshold = 1000000
  circuit_min_requests      = 1000000
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "file://%s"
  account %q { refresh_token = "file://%s" }
  account %q { refresh_token = "file://%s" }
  client %q { password_hash = %q }
}
`, r.storeDir, retrySchedule, r.sb.Tokens.URL, r.sb.SMTP.Addr, testutil.WriteFile(t, dir, "ca.pem", string(r.sb.CA.PEM)),
		testutil.WriteFile(t, dir, "client-secret", clientSecret), qAlice, refresh[qAlice], qBob, refresh[qBob],
		qClient, testutil.FastHash(t, r.password)))
	r.start()
	return r
}

func (r *queueRelay) start() {
	t := r.t
	t.Helper()
	loaded := config.Load(r.config, config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("config: %v", loaded.Diagnostics)
	}
	rt, err := server.New(context.Background(), loaded.Config, server.Options{Logger: r.logs.Logger(t), ConfigPath: r.config})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rt.Shutdown(ctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		secrets := append(append([]string{}, r.secrets...), r.sb.Tokens.IssuedAccessTokens()...)
		testutil.AssertNoSecrets(t, "relay logs", r.logs.String(), secrets)
		testutil.AssertNoSecrets(t, "queue command output", strings.Join(r.outputs, "\n"), secrets)
	})
	r.direct, r.queued = rt.ListenerAddr("direct").String(), rt.ListenerAddr("queued").String()
	st, err := sqlite.Open(context.Background(), r.storeDir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r.st = st
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var (
	queuedAsRE   = regexp.MustCompile(`queued as ([0-9A-Z]+)`)
	sentAsRE     = regexp.MustCompile(`message ([0-9A-Z]+) accepted by the provider`)
	mailqEntryRE = regexp.MustCompile(`(?m)^([0-9A-Z]+)(!?) +(\d+) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (\S+)$`)
)

// send submits a message through a listener with a body holding a fresh
// marker (a secret: no log and no command output may show it); it returns
// the relay's ID of the message and the marker.
func (r *queueRelay) send(addr, from string, to ...string) (id, marker string) {
	t := r.t
	t.Helper()
	marker = "body-marker-" + randomHex(t)
	r.mu.Lock()
	r.secrets = append(r.secrets, marker)
	r.mu.Unlock()
	body := fmt.Sprintf("Subject: queue test\r\nMessage-ID: <%s@client.test>\r\n\r\nThe body says %s.\r\n", randomHex(t), marker)
	text, err := testutil.Send(addr, testutil.Mail{User: qClient, Password: r.password, From: from, To: to, Body: body})
	if err != nil {
		t.Fatalf("send from %s: %v", from, err)
	}
	for _, re := range []*regexp.Regexp{queuedAsRE, sentAsRE} {
		if m := re.FindStringSubmatch(text); m != nil {
			return m[1], marker
		}
	}
	t.Fatalf("reply %q names no message ID", text)
	return "", ""
}

// queue runs `oauthrelay queue VERB -config PATH ARGS...` in-process.
func (r *queueRelay) queue(verb string, args ...string) (code int, stdout, stderr string) {
	r.t.Helper()
	var out, errOut bytes.Buffer
	argv := append([]string{"queue", verb, "-config", r.config}, args...)
	code = Main(context.Background(), argv, IO{Stdout: &out, Stderr: &errOut})
	r.mu.Lock()
	r.outputs = append(r.outputs, out.String(), errOut.String())
	r.mu.Unlock()
	return code, out.String(), errOut.String()
}

// mustQueue runs a command that must succeed and returns its output.
func (r *queueRelay) mustQueue(verb string, args ...string) string {
	r.t.Helper()
	code, out, errOut := r.queue(verb, args...)
	if code != 0 {
		r.t.Fatalf("queue %s %v: exit %d\nstdout:\n%s\nstderr:\n%s", verb, args, code, out, errOut)
	}
	return out
}

// envelope reads a queued message from the store, nil when it is not
// queued.
func (r *queueRelay) envelope(id string) *store.Envelope {
	r.t.Helper()
	e, err := r.st.Get(context.Background(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return e
}

func (r *queueRelay) attempts(id string) int {
	r.t.Helper()
	e := r.envelope(id)
	if e == nil {
		r.t.Fatalf("message %s is not queued", id)
	}
	return e.Attempts
}

// awaitAttempts waits until the message was attempted at least n times.
func (r *queueRelay) awaitAttempts(id string, n int) {
	r.t.Helper()
	testutil.WaitFor(r.t, waitLong, fmt.Sprintf("attempt %d of %s", n, id), func() bool { return r.attempts(id) >= n })
}

// delivered returns the provider's copy of the message with the marker.
func (r *queueRelay) delivered(marker string) *devsandbox.Message {
	for _, m := range r.sb.SMTP.Messages() {
		if bytes.Contains(m.Data, []byte(marker)) {
			return &m
		}
	}
	return nil
}

func wantContains(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// mailqEntries parses `queue list`: ID → held marker and sender.
func mailqEntries(out string) map[string]string {
	entries := map[string]string{}
	for _, m := range mailqEntryRE.FindAllStringSubmatch(out, -1) {
		entries[m[1]] = m[2] + " " + m[4]
	}
	return entries
}

// TestQueueCommandsWhileRelaying runs every `oauthrelay queue` command
// against the store of a running relay whose provider answers 451 to
// every message, so that messages stay queued; the retry schedule (one
// hour) is long, so only `retry` brings an attempt within the test.
func TestQueueCommandsWhileRelaying(t *testing.T) {
	r := startQueueRelay(t, `["1h"]`)
	directID, directMarker := r.send(r.direct, qAlice, "dee@example.net")
	r.sb.SMTP.FailEveryNthData(1, busy)
	a, markerA := r.send(r.queued, qAlice, "x@example.net", "y@example.net")
	b, _ := r.send(r.queued, qAlice, "z@example.net")
	c, _ := r.send(r.queued, qBob, "w@example.net")
	for _, id := range []string{a, b, c} {
		r.awaitAttempts(id, 1)
	}

	t.Run("list", func(t *testing.T) {
		out := r.mustQueue("list")
		wantContains(t, "list", out, "-Queue ID-", "--Size--", "(451 4.3.0 Provider: Mailbox busy, try again later)",
			"x@example.net", "y@example.net", "z@example.net", "w@example.net",
			"account alice@example.com, 1 attempt, next attempt ", "KiB in 3 messages.")
		if !regexp.MustCompile(`next attempt \S+ \S+ \(in 5\dm\)`).MatchString(out) {
			t.Errorf("list does not say the next attempt is in about an hour:\n%s", out)
		}
		entries := mailqEntries(out)
		want := map[string]string{a: " " + qAlice, b: " " + qAlice, c: " " + qBob}
		for id, w := range want {
			if entries[id] != w {
				t.Errorf("entry of %s = %q, want %q:\n%s", id, entries[id], w, out)
			}
		}
		if len(entries) != 3 {
			t.Errorf("list shows %d messages, want 3:\n%s", len(entries), out)
		}
	})
	t.Run("list -json", func(t *testing.T) {
		var entries []queueEntry
		if err := json.Unmarshal([]byte(r.mustQueue("list", "-json")), &entries); err != nil {
			t.Fatal(err)
		}
		if len(entries) != 3 || entries[0].ID != a || entries[1].ID != b || entries[2].ID != c {
			t.Fatalf("entries = %+v, want %s, %s, %s in arrival order", entries, a, b, c)
		}
		e := entries[0]
		if e.State != store.StateQueued || e.Account != qAlice || e.From != qAlice || e.Attempts != 1 || e.Listener != "queued" ||
			e.Client != qClient || !strings.HasSuffix(e.MessageID, "@client.test>") || e.Size == 0 || len(e.Recipients) != 2 {
			t.Errorf("entry = %+v", e)
		}
		if !e.NextAttempt.After(time.Now().Add(30*time.Minute)) || !e.Expires.After(e.NextAttempt) {
			t.Errorf("next attempt %s, expires %s: want the schedule's hour and the 5-day lifetime", e.NextAttempt, e.Expires)
		}
		for _, rc := range e.Recipients {
			if rc.State != store.RcptPending || !strings.HasPrefix(rc.LastReply, "451 4.3.0") {
				t.Errorf("recipient %+v: want pending with the provider's 451", rc)
			}
		}
	})
	t.Run("list filters", func(t *testing.T) {
		out := r.mustQueue("list", "-account", "BOB@example.com")
		if e := mailqEntries(out); len(e) != 1 || e[c] == "" {
			t.Errorf("-account bob: %v\n%s", e, out)
		}
		wantContains(t, "list -state held", r.mustQueue("list", "-state", "held"), "No message in the queue matches (-state held)")
		if e := mailqEntries(r.mustQueue("list", "-state", "queued")); len(e) != 3 {
			t.Errorf("-state queued: %v", e)
		}
	})
	t.Run("show queued", func(t *testing.T) {
		out := r.mustQueue("show", a)
		wantContains(t, "show", out, "Message "+a+": queued, 1 attempt, next attempt ", "account     alice@example.com",
			"from        <alice@example.com>", "@client.test>", `on listener "queued" from client "app"`,
			"Recipients:", "pending    <x@example.net>  451 4.3.0 Provider: Mailbox busy", "pending    <y@example.net>  451 4.3.0",
			"Trail:", "accepted", "attempt    <x@example.net>  451 4.3.0 Provider: Mailbox busy, try again later")
		if _, trail, _ := strings.Cut(out, "Trail:"); strings.Index(trail, "accepted") > strings.Index(trail, "attempt ") {
			t.Errorf("trail out of order:\n%s", out)
		}
		var v struct {
			Queue  *queueEntry
			Events []eventEntry
		}
		if err := json.Unmarshal([]byte(r.mustQueue("show", "-json", a)), &v); err != nil {
			t.Fatal(err)
		}
		if v.Queue == nil || v.Queue.ID != a || len(v.Events) < 3 || v.Events[0].Type != store.EventAccepted ||
			v.Events[1].Type != store.EventAttempt || !strings.HasPrefix(v.Events[1].Reply, "451 4.3.0") {
			t.Errorf("show -json: %+v", v)
		}
		// IDs as mailq prints them (held marker) or typed in lower case.
		wantContains(t, "show by a copied ID", r.mustQueue("show", strings.ToLower(a)+"!"), "Message "+a)
	})
	t.Run("show direct", func(t *testing.T) {
		// Direct-mode history is written in the background.
		testutil.WaitFor(t, waitLong, "the direct message's history", func() bool {
			code, out, _ := r.queue("show", directID)
			return code == 0 && strings.Contains(out, "delivered")
		})
		out := r.mustQueue("show", directID)
		wantContains(t, "show direct", out, "Message "+directID+": sent (direct mode; not in the queue)",
			"to          dee@example.net", `on listener "direct" from client "app"`, "accepted", "delivered  250 2.0.0 OK ")
		if r.delivered(directMarker) == nil {
			t.Error("the provider lacks the direct message")
		}
	})
	t.Run("retry", func(t *testing.T) {
		out := r.mustQueue("retry", a)
		wantContains(t, "retry", out, a+": due now")
		r.awaitAttempts(a, 2)
		if n := r.attempts(b); n != 1 {
			t.Errorf("%s was attempted %d times; only %s was retried", b, n, a)
		}
		wantContains(t, "show after retry", r.mustQueue("show", a), "retry", "2 attempts")
	})
	t.Run("hold and release", func(t *testing.T) {
		wantContains(t, "hold", r.mustQueue("hold", b), b+": held: no attempts until released")
		if e := r.envelope(b); e.State != store.StateHeld {
			t.Errorf("state %s after hold", e.State)
		}
		out := r.mustQueue("list")
		if e := mailqEntries(out); e[b] != "! "+qAlice || e[a] != " "+qAlice {
			t.Errorf("list after hold: %v\n%s", e, out)
		}
		wantContains(t, "list after hold", out, "held: no attempts until released", "3 messages, 1 held.")
		if e := mailqEntries(r.mustQueue("list", "-state", "held")); len(e) != 1 || e[b] == "" {
			t.Errorf("-state held: %v", e)
		}
		wantContains(t, "hold again", r.mustQueue("hold", b), b+": already held")
		code, _, errOut := r.queue("retry", b)
		if code != 1 || !strings.Contains(errOut, b+": held: release it first (oauthrelay queue release "+b+")") {
			t.Errorf("retry of a held message: exit %d, %q", code, errOut)
		}
		wantContains(t, "show held", r.mustQueue("show", b), "held (no attempts until released)", "held")
		wantContains(t, "release", r.mustQueue("release", b), b+": released: next attempt ", "; to attempt it now: oauthrelay queue retry "+b)
		if e := r.envelope(b); e.State != store.StateQueued {
			t.Errorf("state %s after release", e.State)
		}
		wantContains(t, "release again", r.mustQueue("release", b), b+": not held")
	})
	t.Run("delete", func(t *testing.T) {
		wantContains(t, "delete", r.mustQueue("delete", c), c+": deleted without a bounce (its history is kept)")
		if r.envelope(c) != nil {
			t.Error("deleted message still queued")
		}
		if e := mailqEntries(r.mustQueue("list")); len(e) != 2 || e[c] != "" {
			t.Errorf("list after delete: %v", e)
		}
		out := r.mustQueue("show", c)
		wantContains(t, "show deleted", out, "Message "+c+": deleted (queue mode; not in the queue)", "accepted", "attempt", "deleted")
		code, _, errOut := r.queue("hold", c)
		if code != 1 || !strings.Contains(errOut, c+": not in the queue any more: deleted (queue mode)") {
			t.Errorf("hold of a deleted message: exit %d, %q", code, errOut)
		}
	})
	t.Run("unknown ID", func(t *testing.T) {
		for _, verb := range []string{"show", "retry", "hold", "release", "delete"} {
			code, out, errOut := r.queue(verb, "NOSUCHMESSAGE123")
			if code != 1 || strings.TrimSpace(errOut) != "oauthrelay queue "+verb+": NOSUCHMESSAGE123: no such message in the queue or its history" {
				t.Errorf("%s of an unknown ID: exit %d\nstdout: %s\nstderr: %s", verb, code, out, errOut)
			}
		}
		code, out, errOut := r.queue("hold", "NOSUCHMESSAGE123", a)
		if code != 1 || !strings.Contains(out, a+": held") || !strings.Contains(errOut, "1 of 2 messages failed") {
			t.Errorf("hold of a known and an unknown ID: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		r.mustQueue("release", a)
	})
	t.Run("-all", func(t *testing.T) {
		out := r.mustQueue("hold", "-all")
		wantContains(t, "hold -all", out, a+": held", b+": held")
		wantContains(t, "retry -all with all held", r.mustQueue("retry", "-all"), "No queued message to retry")
		out = r.mustQueue("release", "-json", "-all")
		var res struct {
			Action  string
			Results []actResult
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Action != "release" || len(res.Results) != 2 || res.Results[0].Result != "done" {
			t.Errorf("release -all -json: %v\n%s", err, out)
		}
		beforeA, beforeB := r.attempts(a), r.attempts(b)
		wantContains(t, "retry -all", r.mustQueue("retry", "-all"), a+": due now", b+": due now")
		r.awaitAttempts(a, beforeA+1)
		r.awaitAttempts(b, beforeB+1)
	})
	t.Run("delivery after the outage", func(t *testing.T) {
		r.sb.SMTP.FailEveryNthData(0, nil)
		r.mustQueue("retry", a)
		testutil.WaitFor(t, waitLong, a+" delivered", func() bool { return r.envelope(a) == nil })
		m := r.delivered(markerA)
		if m == nil || strings.Join(m.To, ",") != "x@example.net,y@example.net" {
			t.Fatalf("the provider's copy of %s: %+v", a, m)
		}
		out := r.mustQueue("show", a)
		wantContains(t, "show delivered", out, "Message "+a+": delivered (queue mode; not in the queue)", "delivered  <x@example.net>  250 2.0.0 OK ")
	})
	t.Run("delete -all", func(t *testing.T) {
		wantContains(t, "delete -all", r.mustQueue("delete", "-all"), b+": deleted")
		wantContains(t, "list of the empty queue", r.mustQueue("list"), "Queue is empty")
		if out := strings.TrimSpace(r.mustQueue("list", "-json")); out != "[]" {
			t.Errorf("list -json of the empty queue: %s", out)
		}
		wantContains(t, "delete -all of the empty queue", r.mustQueue("delete", "-all"), "Queue is empty")
	})
}

// TestQueueHoldStopsAttempts: with a one-second retry schedule and a
// provider that refuses everything, a held message is not attempted while
// another keeps being attempted, and attempts resume once it is released.
func TestQueueHoldStopsAttempts(t *testing.T) {
	r := startQueueRelay(t, `["1s"]`)
	r.sb.SMTP.FailEveryNthData(1, busy)
	held, _ := r.send(r.queued, qAlice, "x@example.net")
	other, _ := r.send(r.queued, qAlice, "y@example.net")
	r.awaitAttempts(held, 1)
	r.awaitAttempts(other, 1)

	r.mustQueue("hold", held)
	// An attempt that had started before the hold may still finish.
	atHold := r.attempts(held)
	r.awaitAttempts(other, r.attempts(other)+3)
	if n := r.attempts(held); n > atHold+1 {
		t.Errorf("the held message was attempted %d times after the hold (%d → %d)", n-atHold, atHold, n)
	}
	if e := r.envelope(held); e.State != store.StateHeld {
		t.Errorf("state %s, want held", e.State)
	}
	r.mustQueue("release", held)
	r.awaitAttempts(held, r.attempts(held)+2)
}

// TestQueueCommandUsage: usage errors exit 2 with the reason and the
// usage; a configuration without a store, or whose store the relay never
// created, exits 1 and says so.
func TestQueueCommandUsage(t *testing.T) {
	dir := t.TempDir()
	base := `listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "p" { preset = "google" }
account_group "g" {
  provider      = "p"
  client_id     = "id"
  client_secret = "s"
  account "a@example.com" { refresh_token = "t" }
  client "app" { password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE." }
}
`
	noStore := testutil.WriteFile(t, dir, "nostore.hcl", base)
	neverRun := testutil.WriteFile(t, dir, "never.hcl", base+fmt.Sprintf("store { path = %q }\n", filepath.Join(dir, "never")))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"flush"}, 2, `unknown command "flush"`},
		{"no config", []string{"list"}, 2, "-config is required"},
		{"list with an ID", []string{"list", "-config", neverRun, "ABC"}, 2, "takes no message IDs"},
		{"bad state", []string{"list", "-config", neverRun, "-state", "bounced"}, 2, `-state must be queued or held, not "bounced"`},
		{"list -all", []string{"list", "-config", neverRun, "-all"}, 2, "flag provided but not defined: -all"},
		{"show without ID", []string{"show", "-config", neverRun}, 2, "exactly one message ID"},
		{"show two IDs", []string{"show", "-config", neverRun, "A", "B"}, 2, "exactly one message ID"},
		{"hold nothing", []string{"hold", "-config", neverRun}, 2, "give message IDs or -all"},
		{"hold IDs and -all", []string{"hold", "ABC", "-config", neverRun, "-all"}, 2, "give message IDs or -all"},
		{"retry -state", []string{"retry", "-config", neverRun, "-state", "held", "-all"}, 2, "flag provided but not defined: -state"},
		{"no store block", []string{"list", "-config", noStore}, 1, "has no store block, so there is no queue"},
		{"store never created", []string{"hold", "ABC", "-config", neverRun}, 1, "no store at " + filepath.Join(dir, "never") + ": the relay creates it"},
		{"bad config", []string{"list", "-config", filepath.Join(dir, "missing.hcl")}, 1, "missing.hcl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, "", append([]string{"queue"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want %d; stderr lacks %q?\nstdout: %s\nstderr: %s", code, tc.code, tc.want, out, errOut)
			}
			if code == 2 && !strings.Contains(errOut, "oauthrelay queue list") {
				t.Errorf("usage error without the usage:\n%s", errOut)
			}
		})
	}
	if code, out, _ := run(t, "", "queue", "help"); code != 0 || !strings.Contains(out, "oauthrelay queue hold") {
		t.Errorf("queue help: exit %d\n%s", code, out)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "never")); len(matches) != 0 {
		t.Errorf("the queue command created a store at %v", matches)
	}
}
