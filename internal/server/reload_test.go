package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const erin = "erin@example.com" // only in the "extended" configuration

// extension adds a listener and an account (with its own client) to the
// harness configuration.
func extension(h *harness, addr string) string {
	rt := h.sb.Tokens.IssueRefreshToken(delegatedClientID, erin, config.GoogleScope)
	h.secrets = append(h.secrets, rt)
	path := testutil.WriteFile(h.t, h.dir, "rt-erin", rt)
	return fmt.Sprintf(`
listener "extra" {
  address  = %q
  tls_mode = "none"
}
account_group "extra" {
  provider      = "sandbox"
  client_id     = %q
  client_secret = %q
  account %q { refresh_token = "file://%s" }
  client "extra-app" { password_hash = %q }
}
`, addr, delegatedClientID, h.refs["cs-delegated"], erin, path, testutil.FastHash(h.t, h.password))
}

// TestReloadUnderLoad alternates two configurations 50 times — one adds a
// listener and an account, the other removes them — while clients send
// continuously: no message fails, no connection to the kept listener is
// refused, and accounts whose settings did not change keep their tokens.
func TestReloadUnderLoad(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true})
	base := h.cfgText
	extraAddr := testutil.FreeAddr(t)
	extended := base + extension(h, extraAddr)
	l := h.startLoad(4, alice)
	testutil.WaitFor(t, 10*time.Second, "the first messages", func() bool { return l.count() >= 10 })

	for i := 0; i < 50; i++ {
		text := extended
		if i%2 == 1 {
			text = base
		}
		before := l.count()
		h.rewrite(text)
		if err := h.rt.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		// Let messages flow between reloads.
		testutil.WaitFor(t, 10*time.Second, "messages between reloads", func() bool { return l.count() > before+1 })
		if i%2 == 0 {
			// The added listener and account work at once.
			if _, err := testutil.Send(extraAddr, testutil.Mail{User: "extra-app", Password: h.password, From: erin, To: []string{"x@example.net"}}); err != nil {
				t.Fatalf("reload %d: the added listener/account: %v", i, err)
			}
		} else if _, err := net.DialTimeout("tcp", extraAddr, time.Second); err == nil {
			t.Fatalf("reload %d: the removed listener still accepts connections", i)
		}
	}
	sent, errs := l.stop()
	for _, err := range errs {
		t.Errorf("message failed during reloads: %v", err)
	}
	if sent < 20 {
		t.Errorf("only %d messages were sent during the reloads", sent)
	}
	if got := h.sb.Tokens.Requests(alice); got != 1 {
		t.Errorf("token requests for the unchanged account = %d, want 1 (reloads must keep its token)", got)
	}
	if got := h.sb.Tokens.Requests(erin); got != 1 {
		t.Errorf("token requests for the re-added account = %d, want 1 (its settings never changed)", got)
	}
	if v := h.metric(`oauthrelay_config_reloads_total{result="success"}`); v != 50 {
		t.Errorf("successful reloads = %v, want 50 (the start-up load is not a reload)", v)
	}
}

// TestBadReloadKeepsServing: a reload that fails — at any step — changes
// nothing that runs. Each bad configuration also changes the delegated
// group's client_id (unknown to the provider) and the provider's pool and
// limits: after the failed reload, fresh token requests still use the old
// client ID, and /health/ready says what it said before.
func TestBadReloadKeepsServing(t *testing.T) {
	h := newHarness(t, harnessOptions{telemetry: true})
	good := h.cfgText
	occupied, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer occupied.Close()
	changed := strings.Replace(good, fmt.Sprintf("client_id             = %q", delegatedClientID), `client_id             = "relay-renamed"`, 1)
	changed = strings.Replace(changed, `command_timeout = "10s"`, "command_timeout = \"10s\"\n  max_connections = 1\n  rate_limit_per_minute = 1", 1)
	if changed == good {
		t.Fatal("the test could not change the configuration")
	}
	bad := map[string]string{
		"syntax error":          changed + "\nlistener \"broken\" {\n",
		"invalid value":         strings.Replace(changed, `max_recipients   = 5`, `max_recipients   = -1`, 1),
		"missing secret":        strings.Replace(changed, h.refs["rt-"+alice], "file://"+filepath.Join(h.dir, "absent"), 1),
		"port in use":           changed + fmt.Sprintf("listener \"taken\" {\n  address = %q\n  tls_mode = \"none\"\n}\n", occupied.Addr().String()),
		"telemetry port in use": strings.Replace(changed, `telemetry { address = "127.0.0.1:0" }`, fmt.Sprintf("telemetry { address = %q }", occupied.Addr().String()), 1),
		"missing TLS cert":      changed + "listener \"tls\" {\n  address = \"127.0.0.1:0\"\n  tls_cert_file = \"/nonexistent.crt\"\n  tls_key_file = \"/nonexistent.key\"\n}\n",
		"unreadable CA file":    strings.Replace(changed, filepath.Join(h.dir, "ca.pem"), filepath.Join(h.dir, "absent.pem"), 1),
		"unreachable Vault":     "vault {\n  address = \"http://" + occupied.Addr().String() + "\"\n  auth \"token\" { token = \"x\" }\n}\n" + changed,
	}
	health := func() string {
		t.Helper()
		body := h.readyBody()
		var parts []string
		for _, k := range []string{"status", "listeners", "accounts", "provider_circuits", "config_files"} {
			parts = append(parts, fmt.Sprint(k, "=", body[k]))
		}
		return strings.Join(parts, "\n")
	}
	for name, text := range bad {
		t.Run(name, func(t *testing.T) {
			before := health()
			h.rewrite(text)
			if err := h.rt.Reload(context.Background()); err == nil {
				t.Fatal("bad configuration accepted")
			}
			if v := h.metric("oauthrelay_config_last_reload_successful"); v != 0 {
				t.Errorf("last_reload_successful = %v after a failed reload", v)
			}
			if after := health(); after != before {
				t.Errorf("/health/ready changed:\nbefore %s\nafter  %s", before, after)
			}
			// Fresh tokens and connections: they must come from the running
			// configuration, not from the one that failed.
			h.sb.Tokens.RevokeAccessTokens()
			h.sb.SMTP.CloseAllConnections()
			for i := 0; i < 3; i++ { // beyond the failed config's rate limit
				h.mustSend(appClient, alice)
			}
			h.mustSend(appClient, bob)
		})
	}
	h.rewrite(good)
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := h.metric("oauthrelay_config_last_reload_successful"); v != 1 {
		t.Errorf("last_reload_successful = %v after a good reload", v)
	}
	if v := h.metric(`oauthrelay_config_reloads_total{result="failure"}`); v != float64(len(bad)) {
		t.Errorf("failed reloads = %v, want %d", v, len(bad))
	}
	if !strings.Contains(h.logs.String(), "relay.hcl:") {
		t.Error("the failed reload's diagnostics are not logged with file:line")
	}
}

// readyBody returns /health/ready's JSON body.
func (h *harness) readyBody() map[string]any {
	h.t.Helper()
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/health/ready")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		h.t.Fatal(err)
	}
	return body
}

// TestReloadRevokesSessionsOfRemovedClients: a session authenticated
// before a reload is checked against the current configuration at MAIL: a
// client the reload removed, or whose password hash changed, is told to
// reconnect (421) and its connection closed; on reconnecting, its old
// credentials fail. A client the reload kept keeps sending, and a sender
// the reload took away is refused.
func TestReloadRevokesSessionsOfRemovedClients(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	removed := dialAuth(t, h, restrictedClient)
	rehashed := dialAuth(t, h, printerClient)
	narrowed := dialAuth(t, h, appClient)
	kept := dialAuth(t, h, saClient)
	text := strings.Replace(h.cfgText, `client "restricted"`, `client "renamed"`, 1)
	text = strings.Replace(text, fmt.Sprintf("client %q { password_hash = ", printerClient), fmt.Sprintf("client %q { password_hash = %q }\n  client \"unused\" { password_hash = ", printerClient, testutil.FastHash(t, "another password")), 1)
	appLine := fmt.Sprintf("client %q { password_hash = ", appClient)
	i := strings.Index(text, appLine)
	end := i + strings.Index(text[i:], " }")
	text = text[:i] + fmt.Sprintf("client %q {\n    allowed_senders = [%q]\n    password_hash = ", appClient, bob) + text[i+len(appLine):end] + "\n  }" + text[end+2:]
	h.rewrite(text)
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*smtp.Client{"removed": removed, "rehashed": rehashed} {
		from := alice
		if name == "rehashed" {
			from = carol
		}
		err := c.Mail(from, nil)
		wantCode(t, err, "421 4.7.0")
		if err := c.Noop(); err == nil {
			t.Errorf("%s client: the connection stays open after 421", name)
		}
	}
	_, err := h.send(restrictedClient, alice)
	wantCode(t, err, "535 5.7.8")
	_, err = h.send(printerClient, carol)
	wantCode(t, err, "535 5.7.8")
	wantCode(t, narrowed.Mail(alice, nil), "550 5.7.1")
	if err := narrowed.SendMail(bob, []string{"x@example.net"}, strings.NewReader("Subject: kept\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("a kept client's session, allowed sender: %v", err)
	}
	if err := kept.SendMail(dave, []string{"x@example.net"}, strings.NewReader("Subject: kept\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("an unchanged client's session: %v", err)
	}
}

// inflightData starts a message and leaves it in the middle of its DATA.
func inflightData(t *testing.T, h *harness, subject string) (*smtp.Client, io.WriteCloser) {
	t.Helper()
	c := dialAuth(t, h, appClient)
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("x@example.net", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: " + subject + "\r\n\r\nfirst half\r\n"))
	return c, w
}

// shutdownAsync starts a graceful shutdown and returns once the listener
// refuses new connections; the channel gets Shutdown's result.
func shutdownAsync(t *testing.T, h *harness) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- h.rt.Shutdown(ctx)
	}()
	testutil.WaitFor(t, 5*time.Second, "the listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", h.addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	return done
}

// finishInflight completes the DATA started by inflightData and waits for
// Shutdown to return.
func finishInflight(t *testing.T, c *smtp.Client, w io.WriteCloser, done <-chan error) {
	t.Helper()
	w.Write([]byte("second half\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("in-flight message: %v", err)
	}
	c.Quit()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return after the session ended")
	}
}

func TestShutdownDrainsInflightData(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c, w := inflightData(t, h, "in flight")
	finishInflight(t, c, w, shutdownAsync(t, h))
	msgs := h.sb.SMTP.Messages()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "second half") {
		t.Errorf("the in-flight message was not delivered whole: %+v", msgs)
	}
}

func TestShutdownDeadlineAnswers421(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := dialAuth(t, h, appClient)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		done <- h.rt.Shutdown(ctx)
	}()
	time.Sleep(500 * time.Millisecond) // past the shutdown deadline, inside the grace second
	err := c.Mail(alice, nil)
	wantCode(t, err, "421 4.3.2")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestConfigWatch(t *testing.T) {
	h := newHarness(t, harnessOptions{serverExtra: "watch_config = true", telemetry: true})
	extraAddr := testutil.FreeAddr(t)
	h.rewrite(h.cfgText + extension(h, extraAddr))
	testutil.WaitFor(t, 10*time.Second, "the watched change to be applied", func() bool {
		_, err := testutil.Send(extraAddr, testutil.Mail{User: "extra-app", Password: h.password, From: erin, To: []string{"x@example.net"}})
		return err == nil
	})
}

func TestCertificateReload(t *testing.T) {
	h := newHarness(t, harnessOptions{listenerTLS: "starttls"})
	serial := func() string {
		t.Helper()
		c, err := smtp.DialStartTLS(h.addr, &tls.Config{RootCAs: h.sb.CA.Pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Noop(); err != nil { // completes the TLS handshake
			t.Fatal(err)
		}
		st, _ := c.TLSConnectionState()
		return st.PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	if err := h.sb.CA.WriteFiles(filepath.Join(h.dir, "tls.crt"), filepath.Join(h.dir, "tls.key"), "127.0.0.1", "localhost"); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Error("the renewed certificate is not served after a reload")
	}
}

// TestRedactionSafetyNet logs secrets by accident through a runtime built
// with the production logging: they must not reach the output.
func TestRedactionSafetyNet(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient("c", "client-secret-value-123")
	rt := sb.Tokens.IssueRefreshToken("c", alice, config.GoogleScope)
	dir := t.TempDir()
	rtFile := testutil.WriteFile(t, dir, "rt", rt)
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	cfgPath := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "p" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = %q
}
account_group "g" {
  provider      = "p"
  client_id     = "c"
  client_secret = "client-secret-value-123"
  account %q { refresh_token = "file://%s" }
  client "app" { password_hash = %q }
}
`, sb.Tokens.URL, sb.SMTP.Addr, filepath.Join(dir, "ca.pem"), alice, rtFile, testutil.FastHash(t, "pw-redaction")))
	out := &testutil.LogBuffer{}
	logging := newLogging(out)
	loaded := config.Load(cfgPath, config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	r, err := newRuntimeWithLogging(loaded.Config, logging)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown(context.Background())
	if _, err := testutil.Send(r.ListenerAddr("l").String(), testutil.Mail{User: "app", Password: "pw-redaction", From: alice, To: []string{"x@example.net"}}); err != nil {
		t.Fatal(err)
	}
	tokens := sb.Tokens.IssuedAccessTokens()
	log := logging.Logger().Named("careless")
	log.Error("oops", "refresh_token", rt, "secret", "client-secret-value-123", "access_token", tokens[0])
	log.Info("embedded: Bearer " + tokens[0] + " in a sentence")
	text := out.String()
	testutil.AssertNoSecrets(t, "logs", text, []string{rt, "client-secret-value-123", tokens[0]})
	if strings.Count(text, "[REDACTED]") < 4 {
		t.Errorf("expected 4 redactions:\n%s", text)
	}
}
