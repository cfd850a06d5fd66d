package runtime_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/runtime"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// Accounts and clients of the test configuration, one group per flow.
const (
	alice = "alice@example.com" // refresh_token flow
	bob   = "bob@example.com"   // refresh_token flow
	carol = "carol@example.com" // client_credentials (app-only)
	dave  = "dave@example.com"  // service_account with delegation

	appClient        = "app"        // may send as alice and bob
	restrictedClient = "restricted" // may send as alice only
	printerClient    = "printer"    // client_credentials group
	saClient         = "sa-app"     // service_account group

	delegatedClientID = "relay-delegated"
	appOnlyClientID   = "relay-app-only"
	serviceAccount    = "relay@sandbox-project.iam.gserviceaccount.com"
)

// harness is a relay running in-process in front of a sandbox provider.
type harness struct {
	t        *testing.T
	sb       *devsandbox.Sandbox
	rt       *runtime.Runtime
	logs     *testutil.LogBuffer
	addr     string
	password string
	dir      string
	rts      map[string]string // refresh token per account
	secrets  []string
}

type harnessOptions struct {
	style        devsandbox.Style
	mechanism    string // provider auth_mechanism
	smtpAddress  string // override the provider's SMTP address
	listenerTLS  string // tls_mode of the listener (default "none")
	serverExtra  string // attributes added to the server block
	dryRun       bool
	tokenTTL     time.Duration
	refreshEarly string
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &testutil.LogBuffer{}, dir: t.TempDir(), rts: map[string]string{}, password: "pw-" + t.Name()}
	h.sb = testutil.Sandbox(t, devsandbox.Options{Logger: h.logs.Logger(t).Named("sandbox")})
	h.sb.SMTP.SetStyle(o.style)
	if o.tokenTTL > 0 {
		h.sb.Tokens.SetAccessTokenTTL(o.tokenTTL)
	}
	delegatedSecret := "cs-delegated-" + t.Name()
	appOnlySecret := "cs-app-only-" + t.Name()
	h.sb.Tokens.AddClient(delegatedClientID, delegatedSecret)
	h.sb.Tokens.AddClient(appOnlyClientID, appOnlySecret)
	for _, a := range []string{alice, bob} {
		h.rts[a] = h.sb.Tokens.IssueRefreshToken(delegatedClientID, a, config.GoogleScope)
		testutil.WriteFile(t, h.dir, "rt-"+a, h.rts[a])
	}
	key, err := h.sb.Tokens.AddServiceAccount(serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, h.dir, "sa-key.json", string(key))
	testutil.WriteFile(t, h.dir, "cs-delegated", delegatedSecret)
	testutil.WriteFile(t, h.dir, "cs-app-only", appOnlySecret)
	testutil.WriteFile(t, h.dir, "ca.pem", string(h.sb.CA.PEM))
	h.secrets = []string{delegatedSecret, appOnlySecret, h.rts[alice], h.rts[bob], h.password, extractPrivateKey(string(key))}

	smtpAddr := h.sb.SMTP.Addr
	if o.smtpAddress != "" {
		smtpAddr = o.smtpAddress
	}
	mech := o.mechanism
	if mech == "" {
		mech = "XOAUTH2"
	}
	early := o.refreshEarly
	if early == "" {
		early = "5m"
	}
	hash := testutil.FastHash(t, h.password)
	tlsLines := `tls_mode = "none"`
	if o.listenerTLS != "" && o.listenerTLS != "none" {
		cert, key := filepath.Join(h.dir, "tls.crt"), filepath.Join(h.dir, "tls.key")
		if err := h.sb.CA.WriteFiles(cert, key, "127.0.0.1", "localhost"); err != nil {
			t.Fatal(err)
		}
		tlsLines = fmt.Sprintf("tls_mode = %q\n  tls_cert_file = %q\n  tls_key_file = %q", o.listenerTLS, cert, key)
	}
	file := func(name string) string { return "file://" + filepath.Join(h.dir, name) }
	cfgText := fmt.Sprintf(`
server {
  hostname = "relay.test"
  %s
}
listener "test" {
  address          = "127.0.0.1:0"
  max_message_size = "64KB"
  max_recipients   = 5
  %s
}
provider "sandbox" {
  preset         = "custom"
  token_url      = %q
  smtp_address   = %q
  ca_file        = %q
  auth_mechanism = %q
  connect_timeout = "5s"
  command_timeout = "10s"
}
account_group "delegated" {
  provider              = "sandbox"
  client_id             = %q
  client_secret         = %q
  refresh_before_expiry = %q
  account %q { refresh_token = %q }
  account %q { refresh_token = %q }
  client %q { password_hash = %q }
  client %q {
    password_hash   = %q
    allowed_senders = [%q]
  }
}
account_group "app-only" {
  provider      = "sandbox"
  flow          = "client_credentials"
  client_id     = %q
  client_secret = %q
  account %q {}
  client %q { password_hash = %q }
}
account_group "service" {
  provider            = "sandbox"
  flow                = "service_account"
  service_account_key = %q
  account %q {}
  client %q { password_hash = %q }
}
`, o.serverExtra, tlsLines, h.sb.Tokens.URL, smtpAddr, filepath.Join(h.dir, "ca.pem"), mech,
		delegatedClientID, file("cs-delegated"), early,
		alice, file("rt-"+alice), bob, file("rt-"+bob),
		appClient, hash, restrictedClient, hash, alice,
		appOnlyClientID, file("cs-app-only"), carol, printerClient, hash,
		file("sa-key.json"), dave, saClient, hash)
	cfgPath := testutil.WriteFile(t, h.dir, "relay.hcl", cfgText)
	loaded := config.Load(cfgPath, config.Overrides{DryRun: o.dryRun})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("config: %v", loaded.Diagnostics)
	}
	rt, err := runtime.New(context.Background(), loaded.Config, runtime.Options{Logger: h.logs.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	h.rt = rt
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.Shutdown(ctx)
		// Every test ends by checking that no secret reached the logs.
		h.assertNoSecretsLogged()
	})
	h.addr = rt.ListenerAddr("test").String()
	return h
}

func extractPrivateKey(keyJSON string) string {
	i := strings.Index(keyJSON, "-----BEGIN PRIVATE KEY-----")
	if i < 0 {
		return ""
	}
	// A distinctive slice of the key body is enough to detect a leak.
	return keyJSON[i+40 : i+120]
}

func (h *harness) assertNoSecretsLogged() {
	h.t.Helper()
	all := append(append([]string{}, h.secrets...), h.sb.Tokens.IssuedAccessTokens()...)
	testutil.AssertNoSecrets(h.t, "logs", h.logs.String(), all)
}

// send submits a message as client from the given sender.
func (h *harness) send(client, from string, to ...string) (string, error) {
	if len(to) == 0 {
		to = []string{"rcpt@example.net"}
	}
	return testutil.Send(h.addr, testutil.Mail{User: client, Password: h.password, From: from, To: to})
}

// mustSend fails the test unless the message got 250.
func (h *harness) mustSend(client, from string, to ...string) string {
	h.t.Helper()
	text, err := h.send(client, from, to...)
	if err != nil {
		h.t.Fatalf("send as %s via %s: %v", from, client, err)
	}
	return text
}

func wantCode(t *testing.T, err error, want string) {
	t.Helper()
	if got := testutil.Code(err); got != want {
		t.Fatalf("reply = %q (%v), want %s", got, err, want)
	}
}
