package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	graphClient = "erp"                  // may send as any mailbox of contoso.test
	graphStatic = "printer@contoso.test" // declared on its own
)

// graphConfig adds a Graph provider with an app-only group: one mailbox
// of its own and a domain-wide account (wildExtra goes into its block).
func graphConfig(h *harness, wildExtra string) string {
	return fmt.Sprintf(`
provider "graph" {
  preset    = "custom"
  token_url = %q
  transport = "graph"
  graph_url = %q
  ca_file   = %q
  scopes    = [%q]
}
account_group "graph-app" {
  provider      = "graph"
  flow          = "client_credentials"
  client_id     = %q
  client_secret = %q
  account %q { }
  account "*@contoso.test" {
    %s
  }
  client %q {
    password_hash   = %q
    allowed_senders = ["*@contoso.test", %q]
  }
}
`, h.sb.Tokens.URL, h.sb.Graph.URL, filepath.Join(h.dir, "ca.pem"), config.GraphAppOnlyScope,
		appOnlyClientID, h.refs["cs-app-only"], graphStatic, wildExtra, graphClient, testutil.FastHash(h.t, h.password), graphStatic)
}

// newGraphHarness runs the harness relay with the Graph group added.
func newGraphHarness(t *testing.T, wildExtra string) *harness {
	t.Helper()
	h := newHarness(t, harnessOptions{telemetry: true})
	h.stop()
	h.cfgText += graphConfig(h, wildExtra)
	h.rewrite(h.cfgText)
	h.start()
	return h
}

// graphSenders returns the mailbox of each message Graph sent, sorted.
func graphSenders(sb *devsandbox.Sandbox) []string {
	var out []string
	for _, m := range sb.Graph.Messages() {
		out = append(out, m.User)
	}
	sort.Strings(out)
	return out
}

// Messages of a Graph provider go out through sendMail, as the mailbox
// they are from: a declared account, and mailboxes of a domain-wide
// account, each opened on first use.
func TestGraphTransportAndDomainAccount(t *testing.T) {
	h := newGraphHarness(t, "max_mailboxes = 2")
	for _, from := range []string{graphStatic, "a@contoso.test", "B@contoso.test", "a@contoso.test"} {
		h.mustSend(graphClient, from, "rcpt@example.net")
	}
	want := []string{"a@contoso.test", "a@contoso.test", "b@contoso.test", graphStatic}
	if got := graphSenders(h.sb); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Graph sent as %v, want %v", got, want)
	}
	if n := len(h.sb.SMTP.Messages()); n != 0 {
		t.Errorf("%d messages went over SMTP", n)
	}
	// A third mailbox: max_mailboxes are open and in use.
	_, err := h.send(graphClient, "c@contoso.test")
	wantCode(t, err, "452 4.3.1")
	// Outside the domain, and the pattern itself, are no senders.
	for _, from := range []string{"x@fabrikam.test", "*@contoso.test", "a@sub.contoso.test"} {
		_, err := h.send(graphClient, from)
		wantCode(t, err, "550 5.7.1")
	}
	body := h.readyBody()
	accounts := body["accounts"].(map[string]any)
	wild, _ := accounts["*@contoso.test"].(map[string]any)
	if wild == nil || wild["open_mailboxes"] != float64(2) || wild["token_state"] != "valid" {
		t.Errorf("/health/ready domain-wide account = %v", wild)
	}
	if a, _ := accounts["a@contoso.test"].(map[string]any); a == nil || a["circuit"] != "closed" {
		t.Errorf("/health/ready mailbox a@contoso.test = %v", accounts["a@contoso.test"])
	}
	// One app-only token serves the group's every mailbox.
	if n := h.sb.Tokens.Requests(appOnlyClientID); n != 1 {
		t.Errorf("token requests of the app = %d, want 1", n)
	}
}

// Limits count per actual mailbox, and a reload keeps the counts of the
// mailboxes a domain-wide account has open.
func TestDomainAccountLimitsPerMailbox(t *testing.T) {
	h := newGraphHarness(t, "daily_message_limit = 1")
	h.mustSend(graphClient, "a@contoso.test")
	h.mustSend(graphClient, "b@contoso.test")
	_, err := h.send(graphClient, "a@contoso.test")
	wantCode(t, err, "451 4.7.0")
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = h.send(graphClient, "a@contoso.test")
	wantCode(t, err, "451 4.7.0")
	h.mustSend(graphClient, "c@contoso.test")
	if v := h.metric(`oauthrelay_quota_usage_ratio{account="a@contoso.test",quota="daily_messages"}`); v != 1 {
		t.Errorf("quota metric of a@contoso.test = %v, want 1", v)
	}
}

// A domain-wide account with Google's delegation gets a token per mailbox
// (the service account impersonates each), over the SMTP transport.
func TestDomainAccountDelegation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stop()
	h.cfgText = strings.Replace(h.cfgText, fmt.Sprintf("account %q {}\n  client %q", dave, saClient),
		fmt.Sprintf("account %q {}\n  account \"*@delegated.test\" {}\n  client %q", dave, saClient), 1)
	h.rewrite(h.cfgText)
	h.start()
	for _, from := range []string{"x@delegated.test", "y@delegated.test", "x@delegated.test", dave} {
		h.mustSend(saClient, from)
	}
	var users []string
	for _, m := range h.sb.SMTP.Messages() {
		users = append(users, m.User)
	}
	sort.Strings(users)
	if want := []string{dave, "x@delegated.test", "x@delegated.test", "y@delegated.test"}; strings.Join(users, " ") != strings.Join(want, " ") {
		t.Errorf("authenticated as %v, want %v", users, want)
	}
	for _, sub := range []string{"x@delegated.test", "y@delegated.test"} {
		if n := h.sb.Tokens.Requests(sub); n != 1 {
			t.Errorf("token requests for %s = %d, want 1", sub, n)
		}
	}
}

// Queue mode through Graph: a queued message of a domain-wide account's
// mailbox is delivered by its own mailbox, retried after Graph throttled
// it, and its history names the actual mailbox.
func TestGraphQueueModeDomainAccount(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	h := newHarness(t, harnessOptions{
		listenerExtra: "delivery = \"queue\"",
		extraConfig:   fmt.Sprintf("\nstore {\n  path = %q\n}\nqueue {\n  retry_schedule = [\"1s\"]\n  max_lifetime = \"1h\"\n}\n", dir),
	})
	h.stop()
	h.cfgText += graphConfig(h, "")
	h.rewrite(h.cfgText)
	h.start()
	h.sb.Graph.FailNext("q@contoso.test", devsandbox.GraphThrottled(1))
	reply := h.mustSend(graphClient, "q@contoso.test", "r1@example.net", "r2@example.net")
	id := queueID(t, reply)
	await(t, "the Graph delivery", 10*time.Second, func() bool { return len(h.sb.Graph.Messages()) == 1 })
	m := h.sb.Graph.Messages()[0]
	if m.User != "q@contoso.test" || strings.Join(m.To, " ") != "r1@example.net r2@example.net" {
		t.Errorf("Graph sent %+v", m)
	}
	st := openStore(t, dir)
	rec, events := awaitHistory(t, st, id, store.StateDelivered)
	if rec.Account != "q@contoso.test" {
		t.Errorf("history account = %q, want q@contoso.test", rec.Account)
	}
	throttled := false
	for _, e := range events {
		throttled = throttled || e.Type == store.EventAttempt && strings.HasPrefix(e.Reply, "451 ")
	}
	if !throttled {
		t.Errorf("trail %s: no throttled attempt (451) before the delivery; events %+v", eventTypes(events), events)
	}
}

// A Gmail API provider with delegation: each mailbox of a domain-wide
// account gets its own token and sends through messages.send, recipients
// fitted to the envelope.
func TestGmailAPITransportDelegation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stop()
	h.cfgText += fmt.Sprintf(`
provider "gmail" {
  preset        = "custom"
  token_url     = %q
  transport     = "gmail_api"
  gmail_api_url = %q
  ca_file       = %q
  scopes        = [%q]
}
account_group "gws" {
  provider            = "gmail"
  flow                = "service_account"
  service_account_key = %q
  account "*@gws.test" { }
  client "gws-app" {
    password_hash   = %q
    allowed_senders = ["*@gws.test"]
  }
}
`, h.sb.Tokens.URL, h.sb.Gmail.URL, filepath.Join(h.dir, "ca.pem"), config.GoogleScope, h.refs["sa-key.json"], testutil.FastHash(t, h.password))
	h.rewrite(h.cfgText)
	h.start()
	for _, from := range []string{"x@gws.test", "y@gws.test"} {
		h.mustSend("gws-app", from, "r1@example.net", "r2@example.net")
	}
	var got []string
	for _, m := range h.sb.Gmail.Messages() {
		got = append(got, m.User+":"+strings.Join(m.To, ","))
	}
	sort.Strings(got)
	if want := "x@gws.test:r1@example.net,r2@example.net y@gws.test:r1@example.net,r2@example.net"; strings.Join(got, " ") != want {
		t.Errorf("Gmail API sent %v, want %s", got, want)
	}
	for _, sub := range []string{"x@gws.test", "y@gws.test"} {
		if n := h.sb.Tokens.Requests(sub); n != 1 {
			t.Errorf("token requests for %s = %d, want 1", sub, n)
		}
	}
	if n := len(h.sb.SMTP.Messages()); n != 0 {
		t.Errorf("%d messages went over SMTP", n)
	}
}

// A mailbox that makes room for another takes its metric series with it,
// so that series do not grow with every address a client ever used.
func TestDomainMailboxEvictionForgetsSeries(t *testing.T) {
	h := newGraphHarness(t, "max_mailboxes = 1")
	h.sb.Graph.FailAlways("denied@contoso.test", &devsandbox.GraphAccessDenied)
	_, err := h.send(graphClient, "denied@contoso.test")
	wantCode(t, err, "550 5.7.1")
	series := `account="denied@contoso.test"`
	if !strings.Contains(h.scrape(), series) {
		t.Fatalf("no series for the refused mailbox before its eviction")
	}
	h.mustSend(graphClient, "ok@contoso.test") // evicts denied@ (it never delivered)
	for _, line := range strings.Split(h.scrape(), "\n") {
		if strings.Contains(line, series) {
			t.Errorf("series of the evicted mailbox kept: %s", line)
		}
	}
}
