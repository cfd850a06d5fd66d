package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	consoleReadToken  = "read-token-0123456789abcdef"
	consoleAdminToken = "admin-token-0123456789abcdef"
)

// consoleHarness runs the harness relay with a store, a queue listener
// and the operator console on loopback.
func consoleHarness(t *testing.T, o harnessOptions, admin string) *harness {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	o.extraConfig += fmt.Sprintf("\nstore {\n  path = %q\n  history_subjects = true\n}\nqueue {\n  retry_schedule = [\"1s\"]\n}\n", dir) + queueListenerConfig + admin
	h := newHarness(t, o)
	h.secrets = append(h.secrets, consoleReadToken, consoleAdminToken)
	return h
}

const literalAdminBlock = `
admin {
  address     = "127.0.0.1:0"
  read_token  = "` + consoleReadToken + `"
  admin_token = "` + consoleAdminToken + `"
}
`

// api calls the console's admin API and decodes its JSON answer.
func api(t *testing.T, h *harness, method, path, token string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+h.rt.ConsoleAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, secret := range []string{consoleReadToken, consoleAdminToken} {
		if strings.Contains(string(body), secret) {
			t.Errorf("%s %s answered with a token in its body", method, path)
		}
	}
	if out != nil && len(body) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

type apiRecord struct {
	ID, Mode, State, From, Subject string
	MessageID                      string   `json:"message_id"`
	Recipients                     []string `json:"recipients"`
}

type apiSearch struct {
	Messages []apiRecord `json:"messages"`
}

type apiMessage struct {
	ID      string `json:"id"`
	Queue   *struct{ State string }
	History *apiRecord
	Events  []struct{ Type, Reply string }
}

// TestConsoleOnARealRelay drives the admin API of a running relay: the
// history search finds what went through both listeners, a queued
// message is held, released and retried through it, scopes are enforced,
// a failed reload shows its diagnostics, and no token leaks.
func TestConsoleOnARealRelay(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	sent := idFrom(t, sentIDRE, h.mustSend(appClient, alice, "direct@example.net"))

	// A queued message that stays queued: the provider defers every DATA.
	h.sb.SMTP.FailEveryNthData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	reply, err := testutil.Send(h.rt.ListenerAddr("queued").String(), testutil.Mail{
		User: appClient, Password: h.password, From: bob, To: []string{"scans@example.net"},
		Body: "Subject: =?utf-8?q?Scan_f=C3=BCr_Bob?=\r\nMessage-ID: <scan-1@printer.test>\r\n\r\npages\r\n"})
	if err != nil {
		t.Fatal(err)
	}
	queued := idFrom(t, queuedIDRE, reply)

	t.Run("search", func(t *testing.T) {
		var res apiSearch
		testutil.WaitFor(t, storeWait, "the direct message in the history", func() bool {
			return api(t, h, "GET", "/api/v1/messages?from=ALICE&rcpt=direct@", consoleReadToken, &res) == 200 && len(res.Messages) == 1
		})
		if m := res.Messages[0]; m.ID != sent || m.Mode != "direct" || m.State != store.StateSent {
			t.Errorf("direct message = %+v", m)
		}
		if api(t, h, "GET", "/api/v1/messages?message_id=scan-1@printer.test", consoleReadToken, &res); len(res.Messages) != 1 ||
			res.Messages[0].ID != queued || res.Messages[0].Subject != "Scan für Bob" {
			t.Errorf("search by Message-ID = %+v", res.Messages)
		}
		if code := api(t, h, "GET", "/api/v1/messages?since=yesterday", consoleReadToken, nil); code != 400 {
			t.Errorf("bad since: %d, want 400", code)
		}
	})

	t.Run("trail", func(t *testing.T) {
		var m apiMessage
		testutil.WaitFor(t, storeWait, "a deferred attempt", func() bool {
			api(t, h, "GET", "/api/v1/messages/"+queued, consoleReadToken, &m)
			for _, e := range m.Events {
				if e.Type == store.EventAttempt && strings.Contains(e.Reply, "451") {
					return true
				}
			}
			return false
		})
		if m.Queue == nil || m.Queue.State != store.StateQueued || m.History == nil || m.History.From != bob {
			t.Errorf("message = %+v", m)
		}
	})

	t.Run("actions", func(t *testing.T) {
		if code := api(t, h, "POST", "/api/v1/queue/"+queued+"/hold", consoleReadToken, nil); code != http.StatusForbidden {
			t.Errorf("hold with the read token: %d, want 403", code)
		}
		if code := api(t, h, "POST", "/api/v1/queue/"+queued+"/hold", "", nil); code != http.StatusUnauthorized {
			t.Errorf("hold without a token: %d, want 401", code)
		}
		for _, step := range []struct {
			method, action, state string
			code                  int
		}{
			{"POST", "hold", store.StateHeld, 200},
			{"POST", "retry", store.StateHeld, http.StatusConflict}, // held: release it first
			{"POST", "release", store.StateQueued, 200},
		} {
			if code := api(t, h, step.method, "/api/v1/queue/"+queued+"/"+step.action, consoleAdminToken, nil); code != step.code {
				t.Fatalf("%s: %d, want %d", step.action, code, step.code)
			}
			var m apiMessage
			api(t, h, "GET", "/api/v1/messages/"+queued, consoleReadToken, &m)
			if m.Queue == nil || m.Queue.State != step.state {
				t.Fatalf("after %s: %+v", step.action, m.Queue)
			}
		}
		// The provider takes mail again; a retry sends it at once.
		h.sb.SMTP.FailEveryNthData(0, nil)
		if code := api(t, h, "POST", "/api/v1/queue/"+queued+"/retry", consoleAdminToken, nil); code != 200 {
			t.Fatalf("retry: %d", code)
		}
		var m apiMessage
		testutil.WaitFor(t, 20*time.Second, "the retried message delivered", func() bool {
			api(t, h, "GET", "/api/v1/messages/"+queued, consoleReadToken, &m)
			return m.History != nil && m.History.State == store.StateDelivered
		})
		if code := api(t, h, "DELETE", "/api/v1/queue/"+queued, consoleAdminToken, nil); code != http.StatusConflict {
			t.Errorf("delete of a delivered message: %d, want 409 (no longer queued)", code)
		}
		for _, want := range []string{"hold", "release", "retry"} {
			if !strings.Contains(h.logs.String(), want) || !strings.Contains(h.logs.String(), "audit") {
				t.Errorf("no audit line for %s", want)
			}
		}
	})

	t.Run("accounts", func(t *testing.T) {
		var res struct {
			Accounts []struct {
				Address, Transport string
				TokenState         string `json:"token_state"`
				Pool               struct{ Open, Max int }
			}
		}
		if code := api(t, h, "GET", "/api/v1/accounts", consoleReadToken, &res); code != 200 {
			t.Fatalf("accounts: %d", code)
		}
		found := false
		for _, a := range res.Accounts {
			if a.Address == alice {
				found = true
				if a.TokenState != "valid" || a.Transport != "smtp" || a.Pool.Open < 1 {
					t.Errorf("alice = %+v", a)
				}
			}
		}
		if !found {
			t.Errorf("alice not listed: %+v", res.Accounts)
		}
	})

	t.Run("reload", func(t *testing.T) {
		good := h.cfgText
		h.rewrite(good + "\nlistener \"broken\" {\n  address = 12\n}\n")
		var res struct {
			Result string
			Reload struct {
				LastResult  string   `json:"last_result"`
				Diagnostics []string `json:"diagnostics"`
			}
		}
		if code := api(t, h, "POST", "/api/v1/reload", consoleReadToken, nil); code != http.StatusForbidden {
			t.Errorf("reload with the read token: %d, want 403", code)
		}
		if code := api(t, h, "POST", "/api/v1/reload", consoleAdminToken, &res); code != http.StatusUnprocessableEntity {
			t.Errorf("bad reload: %d, want 422", code)
		}
		if res.Reload.LastResult != "failure" || len(res.Reload.Diagnostics) == 0 || !strings.Contains(res.Reload.Diagnostics[0], "relay.hcl:") {
			t.Errorf("reload status = %+v; want the failure with file:line:col diagnostics", res.Reload)
		}
		// The console kept serving through the failed reload.
		h.rewrite(good)
		if code := api(t, h, "POST", "/api/v1/reload", consoleAdminToken, &res); code != 200 || res.Reload.LastResult != "success" {
			t.Errorf("good reload: %d %+v", code, res.Reload)
		}
	})
}

// TestConsoleTokensFromVault: the tokens are Vault secrets; a rotation
// applies without a reload and the old token stops working.
func TestConsoleTokensFromVault(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/admin", map[string]any{"read": consoleReadToken, "admin": consoleAdminToken})
	h := consoleHarness(t, harnessOptions{vault: vs, pollInterval: "1s"}, `
admin {
  address     = "127.0.0.1:0"
  read_token  = "vault://secret/oauthrelay/admin#read"
  admin_token = "vault://secret/oauthrelay/admin#admin"
}
`)
	if code := api(t, h, "GET", "/api/v1/vault", consoleReadToken, nil); code != 200 {
		t.Fatalf("vault status: %d", code)
	}
	var vst struct {
		Configured, Authenticated bool
		Secrets                   []struct{ Ref string }
	}
	api(t, h, "GET", "/api/v1/vault", consoleAdminToken, &vst)
	refs := fmt.Sprint(vst.Secrets)
	if !vst.Configured || !vst.Authenticated || !strings.Contains(refs, "vault://secret/oauthrelay/admin#admin") {
		t.Errorf("vault = %+v", vst)
	}
	const rotated = "admin-token-rotated-0123456789"
	h.secrets = append(h.secrets, rotated)
	vs.Put("oauthrelay/admin", map[string]any{"read": consoleReadToken, "admin": rotated})
	// Await the poll through the console itself (with the read token: a
	// wrong token tried in a loop would trip the login throttle).
	testutil.WaitFor(t, 10*time.Second, "the rotation seen", func() bool {
		var v struct {
			Secrets []struct {
				Ref     string
				Version int
			}
		}
		api(t, h, "GET", "/api/v1/vault", consoleReadToken, &v)
		for _, s := range v.Secrets {
			if s.Ref == "vault://secret/oauthrelay/admin#admin" && s.Version == 2 {
				return true
			}
		}
		return false
	})
	if code := api(t, h, "GET", "/api/v1/overview", rotated, nil); code != 200 {
		t.Errorf("the rotated admin token: %d, want 200", code)
	}
	if code := api(t, h, "GET", "/api/v1/overview", consoleAdminToken, nil); code != http.StatusUnauthorized {
		t.Errorf("the old admin token after the rotation: %d, want 401", code)
	}
}

// TestConsoleFollowsReloads: a reload moves the console to a new address,
// a reload that breaks its block changes nothing, and removing the block
// closes it.
func TestConsoleFollowsReloads(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := strings.Replace(h.cfgText, literalAdminBlock, "", 1)
	first := h.rt.ConsoleAddr().String()

	h.rewrite(base + strings.Replace(literalAdminBlock, "127.0.0.1:0", "127.0.0.3:0", 1))
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	moved := h.rt.ConsoleAddr().String()
	if !strings.HasPrefix(moved, "127.0.0.3:") {
		t.Fatalf("console at %s after the reload, want 127.0.0.3", moved)
	}
	if code := api(t, h, "GET", "/api/v1/overview", consoleReadToken, nil); code != 200 {
		t.Errorf("moved console: %d", code)
	}
	testutil.WaitFor(t, 5*time.Second, "the old address closed", func() bool {
		_, err := http.Get("http://" + first + "/api/v1/overview")
		return err != nil
	})

	// Same read and admin token (from files, so config validation cannot
	// see it): the reload fails and the console keeps its tokens.
	same := "file://" + testutil.WriteFile(t, h.dir, "same-token", consoleAdminToken)
	h.rewrite(base + fmt.Sprintf("admin {\n  address = \"127.0.0.3:0\"\n  read_token = %q\n  admin_token = %q\n}\n", same, same))
	if err := h.rt.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), "same value") {
		t.Errorf("reload with one token for both scopes: %v", err)
	}
	if code := api(t, h, "POST", "/api/v1/queue/none/hold", consoleReadToken, nil); code != http.StatusForbidden {
		t.Errorf("read token after the failed reload: %d, want 403", code)
	}

	h.rewrite(base)
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if h.rt.ConsoleAddr() != nil {
		t.Error("console still open without an admin block")
	}
	testutil.WaitFor(t, 5*time.Second, "the console closed", func() bool {
		_, err := http.Get("http://" + moved + "/api/v1/overview")
		return err != nil
	})
}
