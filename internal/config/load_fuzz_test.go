package config_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// FuzzLoad feeds arbitrary HCL text to config.Load, the loader behind
// `validate`, `run` and reloads. Properties: no panic; a configuration is
// returned exactly when there is no error; every error is a one-line
// diagnostic that names the file (README: `file:line:col: summary: detail`)
// and can be printed with source snippets; a configuration that loads has a
// listener and the defaults a running relay relies on.
func FuzzLoad(f *testing.F) {
	addSeedFiles(f, "testdata/good/full.hcl", "testdata/bad/*.hcl", "testdata/good/split/*.hcl", "../../examples/*.hcl", "../../examples/*/*.hcl")
	for _, s := range []string{
		"", "\n", "{", "}", "#", "/*", "listener", `listener "a" {`, `listener "a" {}`, `listener {}`,
		"listener \"l\" {\n  address = \"127.0.0.1:2525\"\n  tls_mode = \"none\"\n}\n",
		"listener \"l\" {\n  address = \"127.0.0.1:2525\"\n  tls_mode = \"none\"\n  max_message_size = \"8.2MB\"\n  read_timeout = \"1.5m\"\n}\n",
		"listener \"l\" {\n  address = \"127.0.0.1:0\"\n  tls_mode = \"none\"\n  max_message_size = 1e400\n}\n",
		"listener \"l\" {\n  address = \"127.0.0.1:0\"\n  tls_mode = \"none\"\n  max_recipients = 99999999999999999999999\n}\n",
		"listener \"l\" {\n  address = \"127.0.0.1:0\"\n  tls_mode = null\n  max_recipients = 1.5\n}\n",
		"listener \"l\" {\n  address = \"127.0.0.1:0\"\n  tls_mode = upper(\"none\")\n}\n",
		"listener \"l\" {\n  address = \"${var.x}\"\n}\n",
		"listener \"l\" {\n  address = <<EOF\n127.0.0.1:25\nEOF\n}\n",
		"listener \"l\" {\n  address = [for x in [1] : x]\n}\n",
		"listener \"l\\n\\x00\" { address = \"\\u0000\" }\n",
		"server { log_level = \"trace\" }\nserver { log_level = \"debug\" }\n",
		"account_group \"g\" { client_secret = \"valut://hunter2\" }\n",
		"vault {\n  address = \"https://127.0.0.1:8200\"\n  auth \"token\" { token = \"env://VAULT_TOKEN\" }\n}\n",
		"store {\n  path = \"/var/lib/oauthrelay\"\n  history_retention = \"30d\"\n  transit {\n    key = \"q\"\n  }\n}\nqueue {\n  max_lifetime = \"5d\"\n  retry_schedule = [\"1m\", \"5m\", \"1h\"]\n  workers = 16\n  max_bounces_per_hour = 100\n}\nlistener \"l\" {\n  address = \"127.0.0.1:2525\"\n  tls_mode = \"none\"\n  delivery = \"queue\"\n}\n",
		"store {\n  postgres {\n    dsn = \"vault://secret/db#dsn\"\n  }\n}\nqueue {\n  retry_schedule = [\"1d\", upper(\"1m\"), [\"5m\"], {a = 1}]\n}\n",
		strings.Repeat("{", 500), strings.Repeat("listener \"l\" {\n", 50), "\xff\xfe\x00",
	} {
		f.Add(s)
	}
	// One file, rewritten for every input: a fuzzing process runs its
	// inputs one after the other, and a directory per input would make
	// fuzzing several times slower.
	path := filepath.Join(f.TempDir(), "fuzz.hcl")
	f.Fuzz(func(t *testing.T, src string) {
		if mentionsSpecialFiles(src) {
			return // a path such as /dev/zero as a certificate would block the loader, not test it
		}
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		loaded := config.Load(path, config.Overrides{})
		checkDiagnostics(t, path, loaded)
		if loaded.Config != nil {
			checkLoadedConfig(t, path, loaded.Config)
		}
	})
}

// addSeedFiles adds the content of every file matching the patterns: the
// test configurations and the shipped examples are the best starting points.
func addSeedFiles(f *testing.F, patterns ...string) {
	f.Helper()
	n := 0
	for _, p := range patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range matches {
			src, err := os.ReadFile(m)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(string(src))
			n++
		}
	}
	if n < 20 {
		f.Fatalf("only %d seed configurations found", n)
	}
}

// mentionsSpecialFiles reports whether the text names a kernel file tree,
// whose files can block or never end when read.
func mentionsSpecialFiles(src string) bool {
	for _, dir := range []string{"/dev", "/proc", "/sys", "/run"} {
		if strings.Contains(src, dir) {
			return true
		}
	}
	return false
}

func checkDiagnostics(t *testing.T, path string, loaded config.Loaded) {
	t.Helper()
	if (loaded.Config == nil) != loaded.Diagnostics.HasErrors() {
		t.Fatalf("Config is %v while HasErrors is %v: %v", loaded.Config != nil, loaded.Diagnostics.HasErrors(), loaded.Diagnostics)
	}
	for _, d := range loaded.Diagnostics {
		line := config.FormatDiagnostic(d)
		if d.Severity == hcl.DiagError && (d.Subject == nil || d.Subject.Filename != path) {
			t.Fatalf("error without the file's name: %q", line)
		}
		if !strings.HasPrefix(line, path+":") || strings.ContainsAny(line, "\r\n") {
			t.Fatalf("diagnostic is not one %q-prefixed line: %q", path+":", line)
		}
	}
	if err := loaded.WriteDiagnostics(io.Discard, true, 80); err != nil {
		t.Fatalf("printing diagnostics with snippets: %v", err)
	}
}

func checkLoadedConfig(t *testing.T, path string, cfg *config.Config) {
	t.Helper()
	if len(cfg.Files) != 1 || cfg.Files[0] != path {
		t.Fatalf("Files = %q, want [%q]", cfg.Files, path)
	}
	if len(cfg.Listeners) == 0 {
		t.Fatal("a configuration without a listener loaded")
	}
	for _, l := range cfg.Listeners {
		if l.Address == "" || l.MaxMessageSize <= 0 || l.MaxRecipients <= 0 || l.ReadTimeout <= 0 || l.WriteTimeout <= 0 {
			t.Fatalf("listener %q loaded without its defaults: %+v", l.Name, l)
		}
	}
	if cfg.Server.ShutdownTimeout <= 0 {
		t.Fatalf("shutdown_timeout = %v", cfg.Server.ShutdownTimeout)
	}
	checkLoadedStore(t, cfg)
	for _, g := range cfg.Groups {
		if g.Provider == nil || cfg.Providers[g.ProviderName] != g.Provider {
			t.Fatalf("group %q refers to provider %q, which is not the loaded one", g.Name, g.ProviderName)
		}
	}
}

// checkLoadedStore: delivery is one of the two modes and queues only with
// a store; the store and queue hold the documented bounds (README "store",
// "queue").
func checkLoadedStore(t *testing.T, cfg *config.Config) {
	t.Helper()
	for _, l := range cfg.Listeners {
		if l.Delivery != config.DeliveryDirect && (l.Delivery != config.DeliveryQueue || cfg.Store == nil) {
			t.Fatalf("listener %q loaded with delivery %q (store: %v)", l.Name, l.Delivery, cfg.Store != nil)
		}
	}
	if s := cfg.Store; s != nil {
		if !filepath.IsAbs(s.Path) || s.Path != filepath.Clean(s.Path) || s.HistoryRetention < time.Hour {
			t.Fatalf("store loaded outside its bounds: %+v", s)
		}
		if s.Transit != nil && (cfg.Vault == nil || s.Transit.Key == "" || s.Transit.Mount == "") {
			t.Fatalf("transit loaded without vault, key or mount: %+v", s.Transit)
		}
	}
	q := cfg.Queue
	if q.MaxLifetime < time.Minute || q.MaxLifetime > 30*24*time.Hour || q.Workers < 1 || q.Workers > 1024 || q.MaxBouncesPerHour < 1 || len(q.RetrySchedule) == 0 || q.RetrySchedule[0] > q.MaxLifetime {
		t.Fatalf("queue loaded outside its bounds: %+v", q)
	}
	for i, step := range q.RetrySchedule {
		if step < time.Second || i > 0 && step < q.RetrySchedule[i-1] {
			t.Fatalf("retry_schedule loaded with step %d = %v: %v", i, step, q.RetrySchedule)
		}
	}
}
