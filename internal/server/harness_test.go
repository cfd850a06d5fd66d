package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
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
	rt       *server.Runtime
	logs     *testutil.LogBuffer
	addr     string
	password string
	dir      string
	rts      map[string]string // refresh token per account
	refs     map[string]string // secret name -> reference in the config
	secrets  []string

	cfgPath   string
	cfgText   string
	overrides config.Overrides
	logger    hclog.Logger
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
	// vault, when set, holds every secret (vault://secret/oauthrelay/<name>#value)
	// and the config gets a vault block with vaultAuth (default: the root token).
	vault        *testutil.VaultServer
	vaultAuth    string
	pollInterval string
	telemetry    bool
	// delegatedExtra is added to the "delegated" account group.
	delegatedExtra string
	// extraConfig is appended to the configuration.
	extraConfig string
	// listenerExtra and providerExtra are added to the listener and the
	// provider block; the listener has no per-address connection cap
	// unless listenerExtra sets one.
	listenerExtra string
	providerExtra string
	// aliceExtra is added to alice's account block.
	aliceExtra string
	// listenerCert, when set, is the listener's certificate and key files
	// (instead of ones issued by the sandbox CA).
	listenerCert [2]string
	// without lists SMTP extensions the sandbox provider does not offer
	// (devsandbox.Ext8BitMIME, ExtSMTPUTF8, ExtDSN).
	without []string
}

// rewrite replaces the configuration file (for reloads).
func (h *harness) rewrite(text string) {
	h.t.Helper()
	testutil.WriteFile(h.t, h.dir, "relay.hcl", text)
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &testutil.LogBuffer{}, dir: t.TempDir(), rts: map[string]string{}, refs: map[string]string{}, password: "pw-" + t.Name()}
	// secret stores a secret where the configuration will reference it.
	secret := func(name, value string) {
		if o.vault != nil {
			o.vault.Put("oauthrelay/"+name, map[string]any{"value": value})
			h.refs[name] = "vault://secret/oauthrelay/" + name + "#value"
			return
		}
		h.refs[name] = "file://" + testutil.WriteFile(t, h.dir, name, value)
	}
	h.sb = testutil.Sandbox(t, devsandbox.Options{Logger: h.logs.Logger(t).Named("sandbox"), Without: o.without})
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
		secret("rt-"+a, h.rts[a])
	}
	key, err := h.sb.Tokens.AddServiceAccount(serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	secret("sa-key.json", string(key))
	secret("cs-delegated", delegatedSecret)
	secret("cs-app-only", appOnlySecret)
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
		cert, key := o.listenerCert[0], o.listenerCert[1]
		if cert == "" {
			cert, key = filepath.Join(h.dir, "tls.crt"), filepath.Join(h.dir, "tls.key")
			if err := h.sb.CA.WriteFiles(cert, key, "127.0.0.1", "localhost"); err != nil {
				t.Fatal(err)
			}
		}
		tlsLines = fmt.Sprintf("tls_mode = %q\n  tls_cert_file = %q\n  tls_key_file = %q", o.listenerTLS, cert, key)
	}
	file := func(name string) string { return h.refs[name] }
	extra := ""
	if o.vault != nil {
		auth := o.vaultAuth
		if auth == "" {
			auth = fmt.Sprintf(`auth "token" { token = %q }`, testutil.VaultRootToken)
		}
		poll := o.pollInterval
		if poll == "" {
			poll = "30s"
		}
		extra += fmt.Sprintf("vault {\n  address = %q\n  poll_interval = %q\n  %s\n}\n", o.vault.Addr, poll, auth)
	}
	if o.listenerExtra == "" {
		o.listenerExtra = "max_connections_per_ip = 0"
	}
	if o.telemetry {
		extra += "telemetry { address = \"127.0.0.1:0\" }\n"
	}
	cfgText := extra + fmt.Sprintf(`
server {
  hostname = "relay.test"
  %s
}
listener "test" {
  address          = "127.0.0.1:0"
  max_message_size = "64KB"
  max_recipients   = 5
  %s
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
  %s
}
account_group "delegated" {
  provider              = "sandbox"
  client_id             = %q
  client_secret         = %q
  refresh_before_expiry = %q
  %s
  account %q {
    refresh_token = %q
    %s
  }
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
`, o.serverExtra, tlsLines, o.listenerExtra, h.sb.Tokens.URL, smtpAddr, filepath.Join(h.dir, "ca.pem"), mech, o.providerExtra,
		delegatedClientID, file("cs-delegated"), early, o.delegatedExtra,
		alice, file("rt-"+alice), o.aliceExtra, bob, file("rt-"+bob),
		appClient, hash, restrictedClient, hash, alice,
		appOnlyClientID, file("cs-app-only"), carol, printerClient, hash,
		file("sa-key.json"), dave, saClient, hash)
	h.cfgText = cfgText + o.extraConfig
	h.cfgPath = testutil.WriteFile(t, h.dir, "relay.hcl", h.cfgText)
	h.overrides = config.Overrides{DryRun: o.dryRun}
	h.logger = h.logs.Logger(t)
	// Every test ends by checking that no secret reached the logs.
	t.Cleanup(h.assertNoSecretsLogged)
	h.start()
	return h
}

// start runs a relay from the harness configuration.
func (h *harness) start() {
	h.t.Helper()
	loaded := config.Load(h.cfgPath, h.overrides)
	if loaded.Diagnostics.HasErrors() {
		h.t.Fatalf("config: %v", loaded.Diagnostics)
	}
	rt, err := server.New(context.Background(), loaded.Config, server.Options{Logger: h.logger, ConfigPath: h.cfgPath, Overrides: h.overrides})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.rt = rt
	h.t.Cleanup(h.stop)
	h.addr = rt.ListenerAddr("test").String()
}

// stop shuts the relay down (idempotent).
func (h *harness) stop() {
	if h.rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.rt.Shutdown(ctx)
	h.rt = nil
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

// load sends messages continuously from several clients until stopped.
type load struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   int
	errs   []error
}

func (h *harness) startLoad(senders int, from string) *load {
	l := &load{stopCh: make(chan struct{})}
	for i := 0; i < senders; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopCh:
					return
				default:
				}
				_, err := h.send(appClient, from)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, err)
				} else {
					l.sent++
				}
				l.mu.Unlock()
				time.Sleep(20 * time.Millisecond) // pacing the load, not synchronisation
			}
		}()
	}
	h.t.Cleanup(func() { l.stop() })
	return l
}

func (l *load) stop() (int, []error) {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, l.errs
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}

// metric scrapes the relay's /metrics and returns the value of the first
// series whose line starts with prefix (name and labels), or -1.
func (h *harness) metric(prefix string) float64 {
	h.t.Helper()
	for _, line := range strings.Split(h.scrape(), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func newRuntime(cfg *config.Config) (*server.Runtime, error) {
	return server.New(context.Background(), cfg, server.Options{})
}

func newLogging(out *testutil.LogBuffer) *telemetry.Logging {
	return telemetry.NewLogging(out, "trace", "text")
}

func newRuntimeWithLogging(cfg *config.Config, logging *telemetry.Logging) (*server.Runtime, error) {
	return server.New(context.Background(), cfg, server.Options{Logging: logging})
}

// scrape returns the relay's /metrics page.
func (h *harness) scrape() string {
	h.t.Helper()
	resp, err := http.Get("http://" + h.rt.TelemetryAddr().String() + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
