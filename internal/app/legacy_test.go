package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func TestImportLegacyRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":         "{",
		"unknown provider": `[{"email":"a@b.c","provider":"yahoo","client_id":"x","refresh_token":"y"}]`,
		"missing token":    `[{"email":"a@b.c","provider":"gmail","client_id":"x"}]`,
	} {
		p := testutil.WriteFile(t, dir, strings.ReplaceAll(name, " ", "-")+".json", content)
		if code, _, _ := run(t, "", "import-legacy", p); code != 1 {
			t.Errorf("%s: exit %d, want 1", name, code)
		}
	}
}
