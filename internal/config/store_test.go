package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// baseConfig completes a snippet into a valid configuration: one plaintext
// loopback listener "l", a provider and a group with a client. Snippets
// come first in the file, so their line numbers are the file's.
const baseConfig = `
listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "workspace" {
  preset = "google"
}
account_group "g" {
  provider  = "workspace"
  client_id = "id"
  account "a@example.com" {
    refresh_token = "env://A_RT"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
`

const vaultBlock = `vault {
  address = "https://vault.example.com:8200"
  auth "token" {
    token = "env://VAULT_TOKEN"
  }
}
`

// at is an expected diagnostic: its summary, on a line of the snippet, at
// the column where text starts on that line.
type at struct {
	line    int
	text    string
	summary string
}

func loadSnippet(t *testing.T, snippet string) (string, config.Loaded) {
	t.Helper()
	path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", snippet+baseConfig)
	return path, config.Load(path, config.Overrides{})
}

// wantDiagnostics compares the diagnostics of one severity, formatted as
// "file:line:col: summary", with the expected ones.
func wantDiagnostics(t *testing.T, path, src string, diags hcl.Diagnostics, severity hcl.DiagnosticSeverity, wants []at) {
	t.Helper()
	lines := strings.Split(src, "\n")
	var want, got []string
	for _, w := range wants {
		col := strings.Index(lines[w.line-1], w.text)
		if col < 0 {
			t.Fatalf("line %d %q does not contain %q", w.line, lines[w.line-1], w.text)
		}
		want = append(want, fmt.Sprintf("%s:%d:%d: %s", path, w.line, col+1, w.summary))
	}
	for _, d := range diags {
		if d.Severity != severity {
			continue
		}
		if d.Subject == nil {
			t.Errorf("diagnostic without a subject: %s", config.FormatDiagnostic(d))
			continue
		}
		got = append(got, fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
	}
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b }), cmpopts.EquateEmpty()); diff != "" {
		var all []string
		for _, d := range diags {
			all = append(all, config.FormatDiagnostic(d))
		}
		t.Errorf("diagnostics (-want +got):\n%s\nall:\n%s", diff, strings.Join(all, "\n"))
	}
}

func TestStoreAndQueueErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		snippet string
		want    []at
	}{
		{
			name: "queue delivery without a store block",
			snippet: `listener "printers" {
  address  = "127.0.0.1:2526"
  tls_mode = "none"
  delivery = "queue"
}
`,
			want: []at{{4, `"queue"`, "Queue delivery without a store block"}},
		},
		{
			name: "unknown delivery mode",
			snippet: `store {
  path = "/var/lib/oauthrelay"
}
listener "printers" {
  address  = "127.0.0.1:2526"
  tls_mode = "none"
  delivery = "later"
}
`,
			want: []at{{7, `"later"`, "Invalid delivery"}},
		},
		{
			name:    "store without path",
			snippet: "store {\n  history_retention = \"30d\"\n}\n",
			want:    []at{{1, "store", "Missing required argument"}},
		},
		{
			name:    "relative store path",
			snippet: "store {\n  path = \"state\"\n}\n",
			want:    []at{{2, `"state"`, "Invalid store path"}},
		},
		{
			name:    "empty store path",
			snippet: "store {\n  path = \"\"\n}\n",
			want:    []at{{2, `""`, "Invalid store path"}},
		},
		{
			name:    "history retention under an hour",
			snippet: "store {\n  path              = \"/var/lib/oauthrelay\"\n  history_retention = \"59m\"\n}\n",
			want:    []at{{3, `"59m"`, "Invalid value"}},
		},
		{
			name:    "history retention not a duration",
			snippet: "store {\n  path              = \"/var/lib/oauthrelay\"\n  history_retention = \"a month\"\n}\n",
			want:    []at{{3, `"a month"`, "Invalid duration"}},
		},
		{
			name:    "history subjects not a bool",
			snippet: "store {\n  path             = \"/var/lib/oauthrelay\"\n  history_subjects = \"sometimes\"\n}\n",
			want:    []at{{3, "sometimes", "Unsuitable value type"}},
		},
		{
			name:    "unknown store attribute",
			snippet: "store {\n  path   = \"/var/lib/oauthrelay\"\n  engine = \"sqlite\"\n}\n",
			want:    []at{{3, "engine", "Unsupported argument"}},
		},
		{
			name:    "transit without a vault block",
			snippet: "store {\n  path = \"/var/lib/oauthrelay\"\n  transit {\n    key = \"oauthrelay-queue\"\n  }\n}\n",
			want:    []at{{3, "transit", "Transit without a vault block"}},
		},
		{
			name:    "transit without key",
			snippet: vaultBlock + "store {\n  path = \"/var/lib/oauthrelay\"\n  transit {\n    mount = \"transit\"\n  }\n}\n",
			want:    []at{{9, "transit", "Missing required argument"}},
		},
		{
			name:    "transit key and mount invalid",
			snippet: vaultBlock + "store {\n  path = \"/var/lib/oauthrelay\"\n  transit {\n    mount = \"/\"\n    key   = \"queue/key\"\n  }\n}\n",
			want:    []at{{10, `"/"`, "Invalid transit mount"}, {11, `"queue/key"`, "Invalid transit key"}},
		},
		{
			name:    "empty transit key",
			snippet: vaultBlock + "store {\n  path = \"/var/lib/oauthrelay\"\n  transit {\n    key = \"\"\n  }\n}\n",
			want:    []at{{10, `""`, "Invalid transit key"}},
		},
		{
			name:    "two transit blocks",
			snippet: vaultBlock + "store {\n  path = \"/var/lib/oauthrelay\"\n  transit {\n    key = \"a\"\n  }\n  transit {\n    key = \"b\"\n  }\n}\n",
			want:    []at{{12, "transit", "Duplicate transit block"}},
		},
		{
			name:    "postgres with an invalid secret reference",
			snippet: "store {\n  postgres {\n    dsn = \"valut://secret/db#dsn\"\n  }\n}\n",
			want:    []at{{3, `"valut`, "Invalid secret reference"}},
		},
		{
			name:    "postgres without dsn",
			snippet: "store {\n  postgres {\n  }\n}\n",
			want:    []at{{2, "postgres", "Missing required argument"}},
		},
		{
			name:    "path and postgres",
			snippet: "store {\n  path = \"/var/lib/a\"\n  postgres {\n    dsn = \"env://DSN\"\n  }\n}\n",
			want:    []at{{2, `"/var`, "Conflicting store settings"}},
		},
		{
			name:    "postgres vault credentials without a vault block",
			snippet: "store {\n  postgres {\n    dsn = \"postgres://db/relay\"\n    vault_credentials = \"database/creds/relay\"\n  }\n}\n",
			want:    []at{{4, `"database`, "Vault credentials without a vault block"}},
		},
		{
			name:    "postgres vault credentials not a creds path",
			snippet: vaultBlock + "store {\n  postgres {\n    dsn = \"postgres://db/relay\"\n    vault_credentials = \"secret/data/db\"\n  }\n}\n",
			want:    []at{{10, `"secret`, "Invalid vault_credentials"}},
		},
		{
			name:    "postgres role with a quote",
			snippet: "store {\n  postgres {\n    dsn = \"env://DSN\"\n    role = \"owner\\\"; DROP\"\n  }\n}\n",
			want:    []at{{4, `"owner`, "Invalid role"}},
		},
		{
			name:    "postgres expected instances zero",
			snippet: "store {\n  postgres {\n    dsn = \"env://DSN\"\n    expected_instances = 0\n  }\n}\n",
			want:    []at{{4, "0", "Invalid expected_instances"}},
		},
		{
			name:    "postgres one connection",
			snippet: "store {\n  postgres {\n    dsn = \"env://DSN\"\n    expected_instances = 3\n    max_connections = 1\n  }\n}\n",
			want:    []at{{5, "1", "Invalid max_connections"}},
		},
		{
			name:    "duplicate store block",
			snippet: "store {\n  path = \"/var/lib/a\"\n}\nstore {\n  path = \"/var/lib/b\"\n}\n",
			want:    []at{{4, "store", "Duplicate store block"}},
		},
		{
			name:    "duplicate queue block",
			snippet: "store {\n  path = \"/var/lib/a\"\n}\nqueue {\n  workers = 4\n}\nqueue {\n  workers = 8\n}\n",
			want:    []at{{7, "queue", "Duplicate queue block"}},
		},
		{
			name:    "max_lifetime under a minute",
			snippet: "queue {\n  max_lifetime   = \"59s\"\n  retry_schedule = [\"1s\"]\n}\n",
			want:    []at{{2, `"59s"`, "Invalid value"}},
		},
		{
			name:    "max_lifetime beyond 30 days",
			snippet: "queue {\n  max_lifetime = \"30d1s\"\n}\n",
			want:    []at{{2, `"30d1s"`, "Invalid value"}},
		},
		{
			name:    "empty retry_schedule",
			snippet: "queue {\n  retry_schedule = []\n}\n",
			want:    []at{{2, "[]", "Empty retry_schedule"}},
		},
		{
			name:    "retry_schedule not a list",
			snippet: "queue {\n  retry_schedule = \"1m\"\n}\n",
			want:    []at{{2, `1m"`, "Invalid expression"}}, // hcl points inside the quotes
		},
		{
			name:    "decreasing retry_schedule",
			snippet: "queue {\n  retry_schedule = [\"1m\", \"10m\", \"5m\", \"1h\"]\n}\n",
			want:    []at{{2, `"5m"`, "Decreasing retry_schedule"}},
		},
		{
			name:    "retry steps that are not durations of a second or more",
			snippet: "queue {\n  retry_schedule = [\"500ms\", 60, \"soon\", null, \"1m\"]\n}\n",
			want:    []at{{2, `"500ms"`, "Invalid value"}, {2, "60", "Invalid duration"}, {2, `"soon"`, "Invalid duration"}, {2, "null", "Invalid duration"}},
		},
		{
			name:    "first retry after max_lifetime",
			snippet: "queue {\n  max_lifetime   = \"1h\"\n  retry_schedule = [\"2h\", \"3h\"]\n}\n",
			want:    []at{{3, `"2h"`, "First retry after max_lifetime"}},
		},
		{
			name:    "workers out of range",
			snippet: "queue {\n  workers = 0\n}\nstore {\n  path = \"/var/lib/a\"\n}\n",
			want:    []at{{2, "0", "Invalid value"}},
		},
		{
			name:    "too many workers",
			snippet: "queue {\n  workers = 1025\n}\n",
			want:    []at{{2, "1025", "Invalid value"}},
		},
		{
			name:    "fractional workers",
			snippet: "queue {\n  workers = 1.5\n}\n",
			want:    []at{{2, "1.5", "Unsuitable value type"}},
		},
		{
			name:    "no bounces at all is not a cap",
			snippet: "queue {\n  max_bounces_per_hour = 0\n}\n",
			want:    []at{{2, "0", "Invalid value"}},
		},
		{
			name:    "delay warning too short",
			snippet: "queue {\n  delay_warning = \"30s\"\n}\n",
			want:    []at{{2, `"30s"`, "Invalid value"}},
		},
		{
			name:    "queue lease too short",
			snippet: "queue {\n  lease = \"1s\"\n}\n",
			want:    []at{{2, `"1s"`, "Invalid value"}},
		},
		{
			name:    "unknown queue attribute",
			snippet: "queue {\n  max_attempts = 5\n}\n",
			want:    []at{{2, "max_attempts", "Unsupported argument"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, loaded := loadSnippet(t, tc.snippet)
			if loaded.Config != nil {
				t.Error("Load returned a configuration despite errors")
			}
			wantDiagnostics(t, path, tc.snippet, loaded.Diagnostics, hcl.DiagError, tc.want)
		})
	}
}

// A postgres block is the whole store: DSN reference, Vault credentials,
// role and the instance count; without expected_instances it warns.
func TestPostgresStore(t *testing.T) {
	snippet := vaultBlock + "store {\n  history_retention = \"7d\"\n  postgres {\n    dsn = \"vault://secret/oauthrelay/db#dsn\"\n    vault_credentials = \"/database/creds/oauthrelay/\"\n    role = \"oauthrelay_owner\"\n    expected_instances = 3\n    max_connections = 20\n  }\n}\n"
	_, loaded := loadSnippet(t, snippet)
	if loaded.Config == nil {
		t.Fatalf("not loaded: %v", loaded.Diagnostics)
	}
	for _, d := range loaded.Diagnostics {
		t.Errorf("unexpected diagnostic: %v", d)
	}
	st := loaded.Config.Store
	pg := st.Postgres
	if st.Path != "" || pg == nil || pg.DSN.VaultPath != "oauthrelay/db" || pg.DSN.VaultField != "dsn" ||
		pg.VaultCredentials != "database/creds/oauthrelay" || pg.Role != "oauthrelay_owner" ||
		pg.ExpectedInstances != 3 || pg.MaxConnections != 20 || st.HistoryRetention != 7*24*time.Hour {
		t.Fatalf("store = %+v, postgres = %+v", st, pg)
	}
	if refs := loaded.Config.SecretRefs(); !slices.ContainsFunc(refs, func(r config.SecretRef) bool { return r.VaultField == "dsn" }) {
		t.Fatalf("SecretRefs() = %v, without the DSN", refs)
	}

	defaults := "store {\n  postgres {\n    dsn = \"env://DSN\"\n  }\n}\n"
	path, loaded := loadSnippet(t, defaults)
	if loaded.Config == nil || loaded.Config.Store.Postgres.ExpectedInstances != 1 || loaded.Config.Store.Postgres.MaxConnections != config.DefaultPostgresMaxConnections {
		t.Fatalf("defaults: %+v", loaded)
	}
	wantDiagnostics(t, path, defaults, loaded.Diagnostics, hcl.DiagWarning, []at{{2, "postgres", "expected_instances not set"}})

	literal := "store {\n  postgres {\n    dsn = \"postgres://relay:hunter2@db:5432/relay\"\n    expected_instances = 2\n  }\n}\n"
	path, loaded = loadSnippet(t, literal)
	if loaded.Config == nil {
		t.Fatalf("a literal URL: %v", loaded.Diagnostics)
	}
	wantDiagnostics(t, path, literal, loaded.Diagnostics, hcl.DiagWarning, []at{{3, `"postgres`, "Password in the configuration"}})
	for _, d := range loaded.Diagnostics {
		if strings.Contains(d.Error(), "hunter2") {
			t.Fatalf("a diagnostic shows the password: %v", d)
		}
	}
}

// A delay warning that would come only after the message bounced is
// loaded, with a warning at the attribute.
func TestDelayWarningAfterMaxLifetimeWarns(t *testing.T) {
	snippet := "store {\n  path = \"/var/lib/a\"\n}\nqueue {\n  max_lifetime  = \"2h\"\n  delay_warning = \"4h\"\n}\n"
	path, loaded := loadSnippet(t, snippet)
	if loaded.Config == nil {
		t.Fatalf("a warning must not fail the load: %v", loaded.Diagnostics)
	}
	wantDiagnostics(t, path, snippet, loaded.Diagnostics, hcl.DiagWarning, []at{{6, `"4h"`, "Delay warning after max_lifetime"}})
}

func TestQueueWithoutStoreWarns(t *testing.T) {
	snippet := "queue {\n  workers = 4\n}\n"
	path, loaded := loadSnippet(t, snippet)
	if loaded.Config == nil {
		t.Fatalf("a warning must not fail the load: %v", loaded.Diagnostics)
	}
	wantDiagnostics(t, path, snippet, loaded.Diagnostics, hcl.DiagWarning, []at{{1, "queue", "Queue settings without a store block"}})
	if loaded.Config.Queue.Workers != 4 {
		t.Errorf("workers = %d", loaded.Config.Queue.Workers)
	}
}

// TestDuplicateStoreAcrossFiles: merged files may declare the store once;
// the diagnostic points at the second block and names the first.
func TestDuplicateStoreAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	first := testutil.WriteFile(t, dir, "10-store.hcl", "store {\n  path = \"/var/lib/a\"\n}\n")
	second := testutil.WriteFile(t, dir, "20-more.hcl", "queue {}\n\nstore {\n  path = \"/var/lib/b\"\n}\n")
	testutil.WriteFile(t, dir, "30-base.hcl", baseConfig)
	loaded := config.Load(dir, config.Overrides{})
	if loaded.Config != nil || len(loaded.Diagnostics) != 1 {
		t.Fatalf("diagnostics = %v", loaded.Diagnostics)
	}
	got := config.FormatDiagnostic(loaded.Diagnostics[0])
	want := second + ":3:1: Duplicate store block: Only one store block is allowed; the first is at " + first + ":1,1-6."
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestStoreAndQueueModel(t *testing.T) {
	defaults := config.Queue{
		MaxLifetime:       5 * 24 * time.Hour,
		RetrySchedule:     []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour},
		Workers:           64,
		MaxBouncesPerHour: 100,
		DelayWarning:      4 * time.Hour,
	}
	for _, tc := range []struct {
		name      string
		snippet   string
		wantStore *config.Store
		wantQueue config.Queue
		// wantDelivery is the delivery of each listener, "l" (from
		// baseConfig) last.
		wantDelivery []string
	}{
		{
			name:         "omitted: nothing durable, queue defaults, direct delivery",
			wantQueue:    defaults,
			wantDelivery: []string{config.DeliveryDirect},
		},
		{
			name: "store with defaults",
			snippet: `store {
  path = "/var/lib//oauthrelay/"
}
listener "printers" {
  address  = "127.0.0.1:2526"
  tls_mode = "none"
  delivery = "Queue"
}
`,
			wantStore:    &config.Store{Path: "/var/lib/oauthrelay", HistoryRetention: 30 * 24 * time.Hour},
			wantQueue:    defaults,
			wantDelivery: []string{config.DeliveryQueue, config.DeliveryDirect},
		},
		{
			name: "every setting",
			snippet: vaultBlock + `store {
  path              = "/srv/relay"
  history_retention = "1d12h"
  history_subjects  = true
  transit {
    mount = "/team/transit/"
    key   = "oauthrelay-queue.v2"
  }
}
queue {
  max_lifetime         = "30d"
  retry_schedule       = ["1s", "1s", "90s", "1.5h"]
  workers              = 1024
  max_bounces_per_hour = 1
  delay_warning        = "12h"
}
listener "printers" {
  address  = "127.0.0.1:2526"
  tls_mode = "none"
  delivery = "direct"
}
`,
			wantStore: &config.Store{Path: "/srv/relay", HistoryRetention: 36 * time.Hour, HistorySubjects: true, Transit: &config.Transit{Mount: "team/transit", Key: "oauthrelay-queue.v2"}},
			wantQueue: config.Queue{
				MaxLifetime:       30 * 24 * time.Hour,
				RetrySchedule:     []time.Duration{time.Second, time.Second, 90 * time.Second, 90 * time.Minute},
				Workers:           1024,
				MaxBouncesPerHour: 1,
				DelayWarning:      12 * time.Hour,
			},
			wantDelivery: []string{config.DeliveryDirect, config.DeliveryDirect},
		},
		{
			name:         "bounds are inclusive",
			snippet:      "store {\n  path              = \"/srv/relay\"\n  history_retention = \"1h\"\n}\nqueue {\n  max_lifetime   = \"1m\"\n  retry_schedule = [\"1m\"]\n  workers        = 1\n}\n",
			wantStore:    &config.Store{Path: "/srv/relay", HistoryRetention: time.Hour},
			wantQueue:    config.Queue{MaxLifetime: time.Minute, RetrySchedule: []time.Duration{time.Minute}, Workers: 1, MaxBouncesPerHour: 100, DelayWarning: 4 * time.Hour},
			wantDelivery: []string{config.DeliveryDirect},
		},
		{
			name:         "transit mount defaults to transit",
			snippet:      vaultBlock + "store {\n  path = \"/srv/relay\"\n  transit {\n    key = \"k\"\n  }\n}\n",
			wantStore:    &config.Store{Path: "/srv/relay", HistoryRetention: 30 * 24 * time.Hour, Transit: &config.Transit{Mount: "transit", Key: "k"}},
			wantQueue:    defaults,
			wantDelivery: []string{config.DeliveryDirect},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, loaded := loadSnippet(t, tc.snippet)
			if loaded.Config == nil || len(loaded.Diagnostics) != 0 {
				t.Fatalf("diagnostics: %v", loaded.Diagnostics)
			}
			cfg := loaded.Config
			ignoreRanges := cmpopts.IgnoreTypes(hcl.Range{})
			if diff := cmp.Diff(tc.wantStore, cfg.Store, ignoreRanges); diff != "" {
				t.Errorf("store (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantQueue, cfg.Queue, ignoreRanges); diff != "" {
				t.Errorf("queue (-want +got):\n%s", diff)
			}
			var delivery []string
			for _, l := range cfg.Listeners {
				delivery = append(delivery, l.Delivery)
			}
			if diff := cmp.Diff(tc.wantDelivery, delivery); diff != "" {
				t.Errorf("delivery (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStoreRanges: the model keeps where the store, its path and transit
// were written, for the diagnostics of the components that use them.
func TestStoreRanges(t *testing.T) {
	snippet := vaultBlock + "store {\n  path = \"/srv/relay\"\n  transit {\n    key = \"k\"\n  }\n}\nqueue {\n  workers = 2\n}\n"
	path, loaded := loadSnippet(t, snippet)
	if loaded.Config == nil {
		t.Fatal(loaded.Diagnostics)
	}
	s, q := loaded.Config.Store, loaded.Config.Queue
	for _, tc := range []struct {
		what      string
		rng       hcl.Range
		line, col int
	}{
		{"store", s.DefRange, 7, 1},
		{"path", s.PathRange, 8, 10},
		{"transit", s.Transit.DefRange, 9, 3},
		{"queue", q.DefRange, 13, 1},
	} {
		if tc.rng.Filename != path || tc.rng.Start.Line != tc.line || tc.rng.Start.Column != tc.col {
			t.Errorf("%s at %s, want %s:%d:%d", tc.what, tc.rng, path, tc.line, tc.col)
		}
	}
}

// TestCheckHostStoreDirectory: CheckHost creates a missing store directory
// (0700) and proves it writable, leaving nothing behind; a failure points
// at the path attribute.
func TestCheckHostStoreDirectory(t *testing.T) {
	root := t.TempDir()
	regularFile := testutil.WriteFile(t, root, "not-a-dir", "x")
	readOnly := filepath.Join(root, "read-only")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(readOnly, 0o700) })
	existing := filepath.Join(root, "existing")
	if err := os.Mkdir(existing, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		dir         string
		wantSummary string
		skipAsRoot  bool // root writes into a read-only directory
	}{
		{name: "missing directory is created", dir: filepath.Join(root, "state", "relay")},
		{name: "existing directory", dir: existing},
		{name: "parent is a regular file", dir: filepath.Join(regularFile, "relay"), wantSummary: "Cannot create store directory"},
		{name: "path is a regular file", dir: regularFile, wantSummary: "Cannot create store directory"},
		{name: "read-only directory", dir: readOnly, wantSummary: "Store directory not writable", skipAsRoot: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skipAsRoot && os.Geteuid() == 0 {
				t.Skip("root can write into a read-only directory")
			}
			snippet := fmt.Sprintf("store {\n  path = %q\n}\n", tc.dir)
			path, loaded := loadSnippet(t, snippet)
			if loaded.Config == nil || len(loaded.Diagnostics) != 0 {
				t.Fatalf("Load must not touch the directory: %v", loaded.Diagnostics)
			}
			diags := config.CheckHost(loaded.Config)
			if tc.wantSummary != "" {
				wantDiagnostics(t, path, snippet, diags, hcl.DiagError, []at{{2, fmt.Sprintf("%q", tc.dir), tc.wantSummary}})
				return
			}
			if len(diags) != 0 {
				t.Fatalf("unexpected diagnostics: %v", diags)
			}
			st, err := os.Stat(tc.dir)
			if err != nil || !st.IsDir() {
				t.Fatalf("store directory: %v", err)
			}
			if tc.dir != existing && st.Mode().Perm() != 0o700 {
				t.Errorf("created with mode %v, want 0700", st.Mode().Perm())
			}
			if tc.dir == existing && st.Mode().Perm() != 0o750 {
				t.Errorf("existing directory's mode changed to %v", st.Mode().Perm())
			}
			if entries, err := os.ReadDir(tc.dir); err != nil || len(entries) != 0 {
				t.Errorf("check left %v behind (%v)", entries, err)
			}
		})
	}
}

// TestLoadDoesNotCreateTheStore: validate works on a checkout, so Load
// never creates the store directory; CheckHost does.
func TestLoadDoesNotCreateTheStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	_, loaded := loadSnippet(t, fmt.Sprintf("store {\n  path = %q\n}\n", dir))
	if loaded.Config == nil {
		t.Fatal(loaded.Diagnostics)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Load created or touched %s: %v", dir, err)
	}
}
