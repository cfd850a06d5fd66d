package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

var legacySecrets = []string{
	"legacy-google-client-secret", "legacy-m365-client-secret",
	"1//legacy-refresh-token-sales", "1//legacy-refresh-token-support", "0.legacy-refresh-token-alerts",
}

func TestImportLegacyWithEnvReferences(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "legacy.hcl")
	code, stdout, stderr := run(t, "", "import-legacy", "-out", out, "testdata/legacy-accounts.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	testutil.AssertNoSecrets(t, "output", stdout+stderr, legacySecrets)
	if !strings.Contains(stderr, "OAUTHRELAY_RT_SALES") {
		t.Errorf("the variables to set are not listed:\n%s", stderr)
	}
	loaded := config.Load(out, config.Overrides{ClientsOptional: true})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("generated HCL is invalid: %v", loaded.Diagnostics)
	}
	cfg := loaded.Config
	if len(cfg.Groups) != 2 || len(cfg.Accounts()) != 3 {
		t.Fatalf("groups=%d accounts=%d", len(cfg.Groups), len(cfg.Accounts()))
	}
	alerts := cfg.Groups[1].Accounts[0]
	if alerts.Address != "alerts@contoso.com" || alerts.Limits.RateLimitPerMinute != 10 || alerts.MaxConnections != 2 {
		t.Errorf("outlook account = %+v", alerts)
	}
	if p := cfg.Providers["legacy-outlook"]; p.TokenURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token" {
		t.Errorf("outlook token URL = %s", p.TokenURL)
	}
	// The references resolve to the legacy values once the variables are set.
	env := map[string]string{
		"OAUTHRELAY_RT_SALES":                     "1//legacy-refresh-token-sales",
		"OAUTHRELAY_LEGACY_GMAIL_CLIENT_SECRET":   "legacy-google-client-secret",
		"OAUTHRELAY_RT_SUPPORT":                   "1//legacy-refresh-token-support",
		"OAUTHRELAY_RT_ALERTS_M365":               "0.legacy-refresh-token-alerts",
		"OAUTHRELAY_LEGACY_OUTLOOK_CLIENT_SECRET": "legacy-m365-client-secret",
	}
	if _, err := secrets.Load(context.Background(), cfg.SecretRefs(), secrets.WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })); err != nil {
		t.Errorf("references do not resolve: %v", err)
	}

	_, _, stderr = run(t, "", "import-legacy", "-out", out, "-print-secrets", "testdata/legacy-accounts.json")
	if !strings.Contains(stderr, "export OAUTHRELAY_RT_SALES='1//legacy-refresh-token-sales'") {
		t.Errorf("-print-secrets did not print the values:\n%s", stderr)
	}
}

func TestImportLegacyIntoVault(t *testing.T) {
	vs := testutil.StartVault(t)
	t.Setenv("VAULT_ADDR", vs.Addr)
	t.Setenv("VAULT_TOKEN", testutil.VaultRootToken)
	vs.Put("oauthrelay/legacy/accounts/sales", map[string]any{"note": "kept"})
	out := filepath.Join(t.TempDir(), "legacy.hcl")
	code, stdout, stderr := run(t, "", "import-legacy", "-vault-prefix", "secret/oauthrelay/legacy", "-out", out, "testdata/legacy-accounts.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	testutil.AssertNoSecrets(t, "output", stdout+stderr, legacySecrets)
	text, _ := os.ReadFile(out)
	if !strings.Contains(string(text), `"vault://secret/oauthrelay/legacy/accounts/sales#refresh_token"`) {
		t.Errorf("no vault reference:\n%s", text)
	}
	loaded := config.Load(out, config.Overrides{ClientsOptional: true})
	if loaded.Diagnostics.HasErrors() {
		t.Fatalf("generated HCL is invalid: %v", loaded.Diagnostics)
	}
	v, err := secrets.NewVault(loaded.Config.Vault, secrets.ResolveLocal, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := secrets.Load(context.Background(), loaded.Config.SecretRefs(), secrets.WithVault(v, 0))
	if err != nil {
		t.Fatalf("references do not resolve: %v", err)
	}
	for _, ref := range loaded.Config.SecretRefs() {
		got, _ := st.Get(ref)
		found := false
		for _, s := range legacySecrets {
			found = found || got == s
		}
		if !found {
			t.Errorf("%s resolves to an unexpected value", ref)
		}
	}
	s, _ := vs.Client.KVv2("secret").Get(context.Background(), "oauthrelay/legacy/accounts/sales")
	if s.Data["note"] != "kept" {
		t.Error("existing fields of the secret were not kept")
	}
}

// warningsOf returns the warning lines of import-legacy's stderr.
func warningsOf(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if w, ok := strings.CutPrefix(l, "oauthrelay import-legacy: warning: "); ok {
			out = append(out, w)
		}
	}
	return out
}

// TestImportLegacyMapsLimits imports both layouts of accounts.json: the
// nested one (a list) and the flat one (a list under "accounts"), checks the
// limits the relay ends up with and that every field not imported is
// warned about, by name, once.
func TestImportLegacyMapsLimits(t *testing.T) {
	type want struct {
		limits         config.Limits
		maxConnections int
	}
	for _, tc := range []struct {
		file     string
		secrets  []string
		warnings []string
		accounts map[string]want
	}{
		{
			file:     "testdata/legacy-accounts.json",
			secrets:  legacySecrets,
			warnings: []string{`account alerts@contoso.com: field "connection_settings.timeout" has no oauthrelay equivalent; not imported`},
			accounts: map[string]want{
				// 100 an hour: 2 a minute; Google's 2,000 a day and 100 recipients stay.
				"sales@example.com":   {config.Limits{RateLimitPerMinute: 2, RateLimitBurst: 2, DailyMessageLimit: 2000, MaxRecipientsPerMessage: 100}, 10},
				"support@example.com": {config.Limits{DailyMessageLimit: 2000, MaxRecipientsPerMessage: 100}, 10},
				"alerts@contoso.com":  {config.Limits{RateLimitPerMinute: 10, RateLimitBurst: 10, DailyRecipientLimit: 10000}, 2},
			},
		},
		{
			file:    "testdata/legacy-accounts-flat.json",
			secrets: []string{"flat-google-client-secret", "flat-m365-client-secret", "1//flat-refresh-token-user1", "1//flat-refresh-token-user2", "0.flat-refresh-token-ops", "flat-smtp-password-user2"},
			warnings: []string{
				`top-level field "version" has no oauthrelay equivalent; not imported`,
				`account account1@example.com: field "ip_address" has no oauthrelay equivalent; not imported`,
				`account account1@example.com: field "vmta_name" has no oauthrelay equivalent; not imported`,
				`account account2@example.com: field "smtp_password" has no oauthrelay equivalent; not imported`,
				`account ops@contoso.com: field "rate_limiting_settings.burst_size" has no oauthrelay equivalent; not imported`,
				`account account2@example.com: max_concurrent_messages is 0; not imported (the provider's default applies)`,
				`account ops@contoso.com: max_messages_per_hour (3000) and rate_limiting_settings.messages_per_hour (2400) differ; only the lower is imported`,
				`account ops@contoso.com: 2400 messages an hour exceed Microsoft's 30 a minute; imported as 30 a minute`,
				`account ops@contoso.com: max_concurrent_messages (150) and connection_settings.max_connections (5) differ; only the lower is imported`,
				`account ops@contoso.com: 5 concurrent messages exceed Microsoft's 3 connections per mailbox; imported as max_connections = 3`,
			},
			accounts: map[string]want{
				// 10,000 an hour: ceil(10000/60) = 167 a minute. Google's pool
				// default is 10 connections; 8 concurrent messages make it 8.
				"account1@example.com": {config.Limits{RateLimitPerMinute: 167, RateLimitBurst: 167, DailyMessageLimit: 2000, MaxRecipientsPerMessage: 100}, 8},
				// 30 an hour: 1 a minute (the least) and 24×30 a day.
				"account2@example.com": {config.Limits{RateLimitPerMinute: 1, RateLimitBurst: 1, DailyMessageLimit: 720, MaxRecipientsPerMessage: 100}, 10},
				"ops@contoso.com":      {config.Limits{RateLimitPerMinute: 30, RateLimitBurst: 30, DailyRecipientLimit: 10000}, 3},
			},
		},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "legacy.hcl")
			code, stdout, stderr := run(t, "", "import-legacy", "-out", out, tc.file)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			testutil.AssertNoSecrets(t, "output", stdout+stderr, tc.secrets)
			if diff := cmp.Diff(tc.warnings, warningsOf(stderr)); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			loaded := config.Load(out, config.Overrides{ClientsOptional: true})
			if loaded.Diagnostics.HasErrors() {
				t.Fatalf("generated HCL is invalid: %v", loaded.Diagnostics)
			}
			got := map[string]want{}
			for _, a := range loaded.Config.Accounts() {
				got[a.Address] = want{a.Limits, a.MaxConnections}
			}
			if diff := cmp.Diff(tc.accounts, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("account limits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImportLegacyRejectsBadInput(t *testing.T) {
	const secret = "bad-input-secret-value"
	for _, tc := range []struct {
		name, content, wantErr string
	}{
		{"not json", "{", "is not valid JSON"},
		{"object without a list", `{"sales": {"email": "a@b.c", "refresh_token": "` + secret + `"}}`, `holds a JSON object; expected a list of accounts ([{"email": ..., "refresh_token": ...}, ...]) or an object with that list under "accounts"`},
		{"accounts is not a list", `{"accounts": {"email": "a@b.c"}}`, "holds a JSON object; expected a list of accounts"},
		{"accounts is null", `{"accounts": null}`, "holds a JSON object; expected a list of accounts"},
		{"a string", `"` + secret + `"`, "holds a JSON string; expected a list of accounts"},
		{"null", `null`, "holds a JSON null; expected a list of accounts"},
		{"entry not an object", `["a@b.c"]`, "entry 0 is not a JSON object"},
		{"limit not a number", `[{"email":"a@b.c","provider":"gmail","client_id":"x","refresh_token":"y","max_messages_per_hour":"100"}]`, "entry 0: field max_messages_per_hour must be a whole number"},
		{"nested limit not a number", `[{"email":"a@b.c","provider":"gmail","client_id":"x","refresh_token":"y","rate_limiting_settings":{"messages_per_hour":1.5}}]`, "entry 0: field rate_limiting_settings.messages_per_hour must be a whole number"},
		{"secret of the wrong type", `[{"email":"a@b.c","provider":"gmail","client_id":"x","refresh_token":["` + secret + `"]}]`, "entry 0: field refresh_token must be a string"},
		{"unknown provider", `[{"email":"a@b.c","provider":"yahoo","client_id":"x","refresh_token":"y"}]`, `unknown provider "yahoo"`},
		{"missing token", `[{"email":"a@b.c","provider":"gmail","client_id":"x"}]`, "lacks email, client_id or refresh_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.WriteFile(t, t.TempDir(), "accounts.json", tc.content)
			code, stdout, stderr := run(t, "", "import-legacy", p)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.wantErr)
			}
			testutil.AssertNoSecrets(t, "output", stdout+stderr, []string{secret})
		})
	}
}
