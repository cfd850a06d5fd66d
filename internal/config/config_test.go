package config_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// want is an expected diagnostic: "# want: <summary>" marks its line in the
// testdata file. A marker on a line of its own (nothing before the '#')
// expects a diagnostic without a line.
type want struct {
	line    int
	summary string
}

func wantsOf(t *testing.T, path string) []want {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []want
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		before, after, ok := strings.Cut(sc.Text(), "# want: ")
		if !ok {
			continue
		}
		line := n
		if strings.TrimSpace(before) == "" {
			line = 0
		}
		out = append(out, want{line: line, summary: strings.TrimSpace(after)})
	}
	return out
}

func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			wants := wantsOf(t, path)
			if len(wants) == 0 {
				t.Fatal("testdata file has no # want: marker")
			}
			loaded := config.Load(path, config.Overrides{})
			if loaded.Config != nil {
				t.Error("Load returned a config despite errors")
			}
			var got []want
			for _, d := range loaded.Diagnostics {
				if d.Severity != hcl.DiagError {
					continue
				}
				if d.Subject == nil || d.Subject.Filename != path {
					t.Errorf("diagnostic without this file as subject: %s", config.FormatDiagnostic(d))
					continue
				}
				w := want{line: d.Subject.Start.Line, summary: d.Summary}
				if d.Subject.Start.Column < 1 {
					t.Errorf("diagnostic without a column: %s", config.FormatDiagnostic(d))
				}
				got = append(got, w)
			}
			// Markers on their own line match any line.
			for i, w := range wants {
				if w.line == 0 {
					for _, g := range got {
						if g.summary == w.summary {
							wants[i].line = g.line
						}
					}
				}
			}
			sortWants(wants)
			sortWants(got)
			if diff := cmp.Diff(wants, got, cmp.AllowUnexported(want{})); diff != "" {
				var all []string
				for _, d := range loaded.Diagnostics {
					all = append(all, config.FormatDiagnostic(d))
				}
				t.Errorf("diagnostics mismatch (-want +got):\n%s\nall diagnostics:\n%s", diff, strings.Join(all, "\n"))
			}
		})
	}
}

func sortWants(w []want) {
	sort.Slice(w, func(i, j int) bool {
		if w[i].line != w[j].line {
			return w[i].line < w[j].line
		}
		return w[i].summary < w[j].summary
	})
}

func TestDiagnosticFormat(t *testing.T) {
	path := "testdata/bad/bad_duration.hcl"
	loaded := config.Load(path, config.Overrides{})
	if len(loaded.Diagnostics) != 1 {
		t.Fatalf("diagnostics = %v", loaded.Diagnostics)
	}
	got := config.FormatDiagnostic(loaded.Diagnostics[0])
	want := path + `:2:22: Invalid duration: shutdown_timeout: "30" is not a duration; use a number with a unit such as "30s", "5m", "1h" or "30d"`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestFullConfig(t *testing.T) {
	loaded := config.Load("testdata/good/full.hcl", config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("unexpected diagnostics: %v", loaded.Diagnostics)
	}
	cfg := loaded.Config
	if diff := cmp.Diff(config.Server{Hostname: "relay.example.com", LogLevel: "debug", LogFormat: "json", ShutdownTimeout: 45 * time.Second, RetiredSessionTimeout: 2 * time.Minute, ReceivedHideClient: true, MessageMemoryLimit: 64 << 20, SpoolDir: "/var/lib/oauthrelay/spool"}, cfg.Server); diff != "" {
		t.Errorf("server (-want +got):\n%s", diff)
	}
	if !cfg.Telemetry.ReadyRequiresAllAccounts || cfg.Telemetry.Address != "127.0.0.1:9090" {
		t.Errorf("telemetry = %+v", cfg.Telemetry)
	}
	local, lan := cfg.Listeners[0], cfg.Listeners[1]
	if local.MaxMessageSize != 10485760 || local.MaxRecipients != 50 || local.TLSMode != "none" {
		t.Errorf("local listener = %+v", local)
	}
	if lan.MaxMessageSize != 25<<20 || lan.MaxRecipients != config.DefaultMaxRecipients || !lan.AllowInsecureAuth {
		t.Errorf("lan listener = %+v", lan)
	}
	if local.Delivery != config.DeliveryDirect || lan.Delivery != config.DeliveryQueue {
		t.Errorf("delivery: local %q, lan %q", local.Delivery, lan.Delivery)
	}
	wantStore := &config.Store{Path: "/var/lib/oauthrelay", HistoryRetention: 14 * 24 * time.Hour, Transit: &config.Transit{Mount: "transit", Key: "oauthrelay-queue"}}
	if diff := cmp.Diff(wantStore, cfg.Store, cmpopts.IgnoreTypes(hcl.Range{})); diff != "" {
		t.Errorf("store (-want +got):\n%s", diff)
	}
	wantQueue := config.Queue{MaxLifetime: 3 * 24 * time.Hour, RetrySchedule: []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour}, Workers: 8, MaxBouncesPerHour: 20, DelayWarning: 4 * time.Hour}
	if diff := cmp.Diff(wantQueue, cfg.Queue, cmpopts.IgnoreTypes(hcl.Range{})); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}

	type providerView struct {
		TokenURL, SMTPAddress, SMTPTLS, Mechanism string
	}
	view := func(p *config.Provider) providerView {
		return providerView{p.TokenURL, p.SMTPAddress, p.SMTPTLS, p.AuthMechanism}
	}
	wantProviders := map[string]providerView{
		"workspace": {"https://oauth2.googleapis.com/token", "smtp.gmail.com:587", "starttls", "XOAUTH2"},
		"m365":      {"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", "smtp.office365.com:587", "starttls", "XOAUTH2"},
		"proxy":     {"https://login.example.net/oauth2/token", "smtp.example.net:465", "implicit", "OAUTHBEARER"},
	}
	for name, w := range wantProviders {
		if diff := cmp.Diff(w, view(cfg.Providers[name])); diff != "" {
			t.Errorf("provider %s (-want +got):\n%s", name, diff)
		}
	}

	groups := map[string]*config.AccountGroup{}
	for _, g := range cfg.Groups {
		groups[g.Name] = g
	}
	wantScopes := map[string][]string{
		"billing":        {"https://mail.google.com/"},
		"printers":       {"https://outlook.office365.com/.default"},
		"delegated-m365": {"https://outlook.office.com/SMTP.Send", "offline_access"},
		"robots":         {"https://mail.google.com/"},
	}
	for name, scopes := range wantScopes {
		if diff := cmp.Diff(scopes, groups[name].Scopes); diff != "" {
			t.Errorf("group %s scopes (-want +got):\n%s", name, diff)
		}
	}
	billing := groups["billing"]
	if billing.RefreshBeforeExpiry != 2*time.Minute || groups["printers"].RefreshBeforeExpiry != config.DefaultRefreshBeforeExpiry {
		t.Errorf("refresh_before_expiry: billing %v printers %v", billing.RefreshBeforeExpiry, groups["printers"].RefreshBeforeExpiry)
	}
	if got := billing.Accounts[0].Address; got != "invoices@example.com" {
		t.Errorf("account address not normalised: %q", got)
	}
	if diff := cmp.Diff(config.Limits{RateLimitPerMinute: 30, DailyMessageLimit: 2000, MaxRecipientsPerMessage: 100}, billing.Accounts[0].Limits); diff != "" {
		t.Errorf("account limits over the google preset (-want +got):\n%s", diff)
	}
	scanner := groups["printers"].Accounts[0]
	if diff := cmp.Diff(config.Limits{RateLimitPerMinute: 30, DailyRecipientLimit: 10000}, scanner.Limits); diff != "" {
		t.Errorf("microsoft preset limits (-want +got):\n%s", diff)
	}
	if scanner.MaxConnections != 3 || billing.Accounts[0].MaxConnections != 10 {
		t.Errorf("pool sizes: microsoft %d, google %d", scanner.MaxConnections, billing.Accounts[0].MaxConnections)
	}
	if p := cfg.Providers["m365"]; p.Circuit.FailureThreshold != config.DefaultCircuitFailureThreshold || p.Pool.WaitTimeout != config.DefaultConnectionWaitTimeout {
		t.Errorf("m365 circuit/pool = %+v %+v", p.Circuit, p.Pool)
	}
	clients := map[string]*config.Client{}
	for _, c := range cfg.Clients() {
		clients[c.Name] = c
	}
	if diff := cmp.Diff([]string{"invoices@example.com"}, clients["billing-app"].AllowedSenders); diff != "" {
		t.Errorf("billing-app senders (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"invoices@example.com", "receipts@example.com"}, clients["erp"].AllowedSenders); diff != "" {
		t.Errorf("erp senders default to every account of the group (-want +got):\n%s", diff)
	}
	refs := map[string]bool{}
	for _, r := range cfg.SecretRefs() {
		refs[r.String()] = true
	}
	for _, r := range []string{"env://GOOGLE_CLIENT_SECRET", "file:///etc/oauthrelay/invoices.rt", "vault://secret/oauthrelay/accounts/receipts#refresh_token", "file:///etc/oauthrelay/sa.json"} {
		if !refs[r] {
			t.Errorf("secret reference %s missing from %v", r, refs)
		}
	}
	if cfg.Vault == nil || cfg.Vault.Auth.Method != "approle" || cfg.Vault.PollInterval != config.DefaultVaultPollInterval {
		t.Errorf("vault = %+v", cfg.Vault)
	}
}

func TestDirectoryIsMergedInNameOrder(t *testing.T) {
	loaded := config.Load("testdata/good/split", config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("unexpected diagnostics: %v", loaded.Diagnostics)
	}
	want := []string{"testdata/good/split/10-server.hcl", "testdata/good/split/20-google.hcl", "testdata/good/split/30-groups.hcl"}
	if diff := cmp.Diff(want, loaded.Config.Files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if len(loaded.Config.Accounts()) != 1 {
		t.Errorf("accounts = %d", len(loaded.Config.Accounts()))
	}
}

func TestOverrides(t *testing.T) {
	t.Run("host and port of the first listener", func(t *testing.T) {
		loaded := config.Load("testdata/good/split", config.Overrides{Port: 2600, DryRun: true, GlobalConcurrency: 7})
		if loaded.Diagnostics.HasErrors() {
			t.Fatal(loaded.Diagnostics)
		}
		c := loaded.Config
		if c.Listeners[0].Address != "127.0.0.1:2600" || !c.Server.DryRun || c.Server.GlobalConcurrency != 7 {
			t.Errorf("overrides not applied: %s dry=%v conc=%d", c.Listeners[0].Address, c.Server.DryRun, c.Server.GlobalConcurrency)
		}
	})
	t.Run("overridden host is validated", func(t *testing.T) {
		loaded := config.Load("testdata/good/split", config.Overrides{Host: "0.0.0.0"})
		if !strings.Contains(fmt.Sprint(loaded.Diagnostics), "Plaintext listener off loopback") {
			t.Errorf("diagnostics = %v", loaded.Diagnostics)
		}
	})
}

// TestCheckHost: Load reads no file the configuration names, CheckHost
// reads every one and reports each problem at the attribute that names the
// file.
func TestCheckHost(t *testing.T) {
	dir := t.TempDir()
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	otherCert, otherKey := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	for _, pair := range [][2]string{{cert, key}, {otherCert, otherKey}} {
		if err := ca.WriteFiles(pair[0], pair[1], "relay.test"); err != nil {
			t.Fatal(err)
		}
	}
	notPEM := testutil.WriteFile(t, dir, "not-pem.txt", "hello")
	missing := filepath.Join(dir, "missing")
	groups, err := os.ReadFile("testdata/good/split/30-groups.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                  string
		certFile, keyFile     string
		providerCA, vaultCA   string
		wantSummary, wantAttr string // wantAttr: the attribute the diagnostic points at
	}{
		{name: "all readable", certFile: cert, keyFile: key, providerCA: cert, vaultCA: cert},
		{name: "missing certificate", certFile: missing, keyFile: key, providerCA: cert, vaultCA: cert, wantSummary: "Cannot load TLS certificate", wantAttr: "  tls_cert_file"},
		{name: "key of another certificate", certFile: cert, keyFile: otherKey, providerCA: cert, vaultCA: cert, wantSummary: "Cannot load TLS certificate", wantAttr: "  tls_cert_file"},
		{name: "missing provider CA file", certFile: cert, keyFile: key, providerCA: missing, vaultCA: cert, wantSummary: "Cannot read CA file", wantAttr: "  ca_file"},
		{name: "vault CA file without PEM", certFile: cert, keyFile: key, providerCA: cert, vaultCA: notPEM, wantSummary: "Invalid CA file", wantAttr: "    ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`listener "sub" {
  address       = "0.0.0.0:587"
  tls_cert_file = %q
  tls_key_file  = %q
}
provider "workspace" {
  preset  = "google"
  ca_file = %q
}
vault {
  address = "https://vault.example.com:8200"
    ca_file = %q
  auth "token" {
    token = "env://VAULT_TOKEN"
  }
}
%s`, tc.certFile, tc.keyFile, tc.providerCA, tc.vaultCA, groups)
			p := testutil.WriteFile(t, t.TempDir(), "relay.hcl", body)
			loaded := config.Load(p, config.Overrides{})
			if len(loaded.Diagnostics) != 0 || loaded.Config == nil {
				t.Fatalf("Load must not read the files: %v", loaded.Diagnostics)
			}
			diags := config.CheckHost(loaded.Config)
			if tc.wantSummary == "" {
				if len(diags) != 0 {
					t.Fatalf("unexpected diagnostics: %v", diags)
				}
				return
			}
			if len(diags) != 1 || diags[0].Summary != tc.wantSummary {
				t.Fatalf("diagnostics = %v, want one %q", diags, tc.wantSummary)
			}
			wantLine := lineOf(t, body, tc.wantAttr+" ")
			if r := diags[0].Subject; r == nil || r.Filename != p || r.Start.Line != wantLine || r.Start.Column < 1 {
				t.Errorf("diagnostic at %v, want %s:%d", r, p, wantLine)
			}
		})
	}
}

// lineOf returns the 1-based line of the first line starting with prefix.
func lineOf(t *testing.T, text, prefix string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	t.Fatalf("no line starts with %q", prefix)
	return 0
}

func TestMissingPath(t *testing.T) {
	loaded := config.Load("testdata/does-not-exist.hcl", config.Overrides{})
	if !loaded.Diagnostics.HasErrors() || loaded.Config != nil {
		t.Fatalf("missing file accepted: %v", loaded.Diagnostics)
	}
	empty := t.TempDir()
	if d := config.Load(empty, config.Overrides{}).Diagnostics; !strings.Contains(fmt.Sprint(d), "No configuration files") {
		t.Errorf("empty directory: %v", d)
	}
}
