package secrets_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const relayPolicy = `
path "secret/data/oauthrelay/*"     { capabilities = ["read", "update", "create"] }
path "secret/metadata/oauthrelay/*" { capabilities = ["read"] }
`

func vaultConfig(addr string, auth config.VaultAuth) *config.Vault {
	return &config.Vault{Address: addr, PollInterval: 200 * time.Millisecond, Auth: auth}
}

func vref(t *testing.T, s string) config.SecretRef {
	t.Helper()
	r, err := config.ParseSecretRef(s, hcl.Range{Filename: "relay.hcl", Start: hcl.Pos{Line: 7, Column: 3}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newVault(t *testing.T, cfg *config.Vault, logs *testutil.LogBuffer) *secrets.Vault {
	t.Helper()
	v, err := secrets.NewVault(cfg, secrets.ResolveLocal, logs.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVaultTokenAndAppRoleLoginAndRead(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "cs-1", "other": "kept"})
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, secretID := vs.EnableAppRole("relay", "oauthrelay", time.Hour, 2*time.Hour)

	auths := map[string]config.VaultAuth{
		"token":   {Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)},
		"approle": {Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(secretID), MountPath: "approle"},
	}
	for name, auth := range auths {
		t.Run(name, func(t *testing.T) {
			logs := &testutil.LogBuffer{}
			v := newVault(t, vaultConfig(vs.Addr, auth), logs)
			ref := vref(t, "vault://secret/oauthrelay/app#client_secret")
			st, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := st.Get(ref); got != "cs-1" {
				t.Errorf("value = %q", got)
			}
			testutil.AssertNoSecrets(t, "logs", logs.String(), []string{"cs-1", secretID, testutil.VaultRootToken})
		})
	}
}

func TestVaultMissingSecretNamesThePathOnly(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "very-secret-value"})
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)}), &testutil.LogBuffer{})
	refs := []config.SecretRef{
		vref(t, "vault://secret/oauthrelay/absent#refresh_token"),
		vref(t, "vault://secret/oauthrelay/app#no_such_field"),
	}
	_, err := secrets.Load(context.Background(), refs, secrets.WithVault(v, time.Second))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"relay.hcl:7:3", "vault://secret/oauthrelay/absent", "no such secret", `no field "no_such_field"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "very-secret-value") {
		t.Errorf("error reveals a value: %s", msg)
	}
}

func TestVaultForbiddenPath(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("elsewhere/app", map[string]any{"client_secret": "x"})
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, secretID := vs.EnableAppRole("relay", "oauthrelay", time.Hour, time.Hour)
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(secretID), MountPath: "approle"}), &testutil.LogBuffer{})
	_, err := secrets.Load(context.Background(), []config.SecretRef{vref(t, "vault://secret/elsewhere/app#client_secret")}, secrets.WithVault(v, time.Second))
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "vault://secret/elsewhere/app") {
		t.Fatalf("err = %v, want a 403 naming the path", err)
	}
}

// TestVaultClientFollowsLogins: Client is the one client every login puts
// its token into, so other engines (Transit) use the current token.
func TestVaultClientFollowsLogins(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "x"})
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, secretID := vs.EnableAppRole("relay", "oauthrelay", time.Hour, time.Hour)
	cfg := vaultConfig(vs.Addr, config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(secretID), MountPath: "approle"})
	v, err := secrets.NewVault(cfg, secrets.ResolveLocal, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := v.Client
	if tok := client().Token(); tok != "" {
		t.Fatalf("token before login: %d chars, want none", len(tok))
	}
	ctx := context.Background()
	var tokens []string
	for range 2 {
		if err := v.Login(ctx); err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, client().Token())
		if _, err := client().KVv2("secret").Get(ctx, "oauthrelay/app"); err != nil {
			t.Fatalf("read with the logged-in client: %v", err)
		}
	}
	if tokens[0] == "" || tokens[0] == tokens[1] {
		t.Fatal("a second login did not put a new token into the client")
	}
	if client() != v.Client() {
		t.Fatal("Client returned another client")
	}
}

func TestVaultRotationIsPolled(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "rt-1"})
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)}), &testutil.LogBuffer{})
	ref := vref(t, "vault://secret/oauthrelay/acct#refresh_token")
	st, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan []config.SecretRef, 10)
	st.Subscribe(func(c []config.SecretRef) { changed <- c })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Watch(ctx)

	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "rt-2"})
	select {
	case c := <-changed:
		if len(c) != 1 || c[0].String() != ref.String() {
			t.Errorf("changed = %v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("rotation not noticed")
	}
	if got, _ := st.Get(ref); got != "rt-2" {
		t.Errorf("value = %q", got)
	}
	// The console's view: the path, its field and version, never a value.
	paths := st.VaultPaths()
	if len(paths) != 1 || paths[0].Path != "vault://secret/oauthrelay/acct" || paths[0].Version != 2 ||
		strings.Join(paths[0].Fields, ",") != "refresh_token" || time.Since(paths[0].Checked) > 5*time.Second {
		t.Errorf("VaultPaths() = %+v", paths)
	}
	if vst := v.Status(); !vst.Up || vst.Logins != 1 || vst.AuthMethod != "token" || vst.Address != vs.Addr || vst.LastError != "" {
		t.Errorf("Status() = %+v", vst)
	}

	// Vault goes away: the last value stays; a rebuilt Vault (versions
	// numbered anew) with a new value is picked up.
	vs.Stop()
	time.Sleep(300 * time.Millisecond) // a few poll intervals without Vault
	if got, _ := st.Get(ref); got != "rt-2" {
		t.Errorf("value during the outage = %q", got)
	}
	if _, up, _ := st.VaultStatus(); up {
		t.Error("VaultStatus reports up during the outage")
	}
	if vst := v.Status(); vst.Up || vst.LastError == "" || strings.Contains(vst.LastError, testutil.VaultRootToken) {
		t.Errorf("Status() during the outage = %+v; want down with the error, no token", vst)
	}
	vs.Restart()
	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "rt-3"})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("rotation after the restart not noticed")
	}
	if got, _ := st.Get(ref); got != "rt-3" {
		t.Errorf("value after the restart = %q", got)
	}
}

func TestVaultWriteBackWithCheckAndSet(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "rt-1", "note": "keep me"})
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)}), &testutil.LogBuffer{})
	ref := vref(t, "vault://secret/oauthrelay/acct#refresh_token")
	st, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var notified int
	st.Subscribe(func([]config.SecretRef) { notified++ })

	if err := st.WriteBack(context.Background(), ref, "rt-2"); err != nil {
		t.Fatal(err)
	}
	got, err := vs.Client.KVv2("secret").Get(context.Background(), "oauthrelay/acct")
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["refresh_token"] != "rt-2" || got.Data["note"] != "keep me" || got.VersionMetadata.Version != 2 {
		t.Errorf("after write-back: %v version %d", got.Data, got.VersionMetadata.Version)
	}
	if notified != 0 {
		t.Error("the relay's own write was reported as an external rotation")
	}

	// Another instance rotates first: our CAS fails and we adopt theirs.
	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "rt-other", "note": "keep me"})
	err = st.WriteBack(context.Background(), ref, "rt-mine")
	if !errors.Is(err, secrets.ErrCASConflict) {
		t.Fatalf("err = %v, want ErrCASConflict", err)
	}
	if v, _ := st.Get(ref); v != "rt-other" {
		t.Errorf("after the conflict the store holds %q, want the newer rt-other", v)
	}
	if notified != 1 {
		t.Errorf("subscribers notified %d times, want 1", notified)
	}
}

func TestVaultTokenRenewalThenRelogin(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "client-secret-one"})
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, secretID := vs.EnableAppRole("short", "oauthrelay", 4*time.Second, 12*time.Second)
	logs := &testutil.LogBuffer{}
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(secretID), MountPath: "approle"}), logs)
	ref := vref(t, "vault://secret/oauthrelay/app#client_secret")
	st, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); v.KeepAlive(ctx) }()
	go func() { defer wg.Done(); st.Watch(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	deadline := time.Now().Add(40 * time.Second)
	for {
		logins, renewals := v.Stats()
		if logins >= 2 && renewals >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 40s: logins=%d renewals=%d\n%s", logins, renewals, logs.String())
		}
		time.Sleep(200 * time.Millisecond) // waiting on Vault's TTL clock
	}
	// The fresh token still reads: rotation keeps working.
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "client-secret-two"})
	deadline = time.Now().Add(10 * time.Second)
	for v2, _ := st.Get(ref); v2 != "client-secret-two"; v2, _ = st.Get(ref) {
		if time.Now().After(deadline) {
			t.Fatalf("rotation not seen with the new Vault token\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	testutil.AssertNoSecrets(t, "logs", logs.String(), []string{secretID, "client-secret-one", "client-secret-two"})
}

// TestVaultAppRoleWrappedSecretID logs in with a response-wrapped secret ID,
// the delivery pattern Vault recommends for AppRole.
func TestVaultAppRoleWrappedSecretID(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, _ := vs.EnableAppRole("relay", "oauthrelay", time.Hour, time.Hour)
	wrapper, err := vs.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	wrapper.SetToken(testutil.VaultRootToken)
	wrapper.SetWrappingLookupFunc(func(string, string) string { return "60s" })
	s, err := wrapper.Logical().Write("auth/approle/role/relay/secret-id", nil)
	if err != nil || s.WrapInfo == nil {
		t.Fatalf("wrapping a secret ID: %v", err)
	}
	logs := &testutil.LogBuffer{}
	auth := config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(s.WrapInfo.Token), SecretIDWrapped: true, MountPath: "approle"}
	newVault(t, vaultConfig(vs.Addr, auth), logs)
	testutil.AssertNoSecrets(t, "logs", logs.String(), []string{s.WrapInfo.Token})

	// A wrapping token works once: a second login with it fails clearly.
	v2, err := secrets.NewVault(vaultConfig(vs.Addr, auth), secrets.ResolveLocal, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.Login(context.Background()); err == nil || !strings.Contains(err.Error(), "approle") {
		t.Errorf("second unwrap: %v", err)
	}
}

// wrappedSecretID issues a secret ID for role, response-wrapped for
// wrapTTL, and returns the wrapping token.
func wrappedSecretID(t *testing.T, vs *testutil.VaultServer, role string, wrapTTL time.Duration) string {
	t.Helper()
	wrapper, err := vs.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	wrapper.SetToken(testutil.VaultRootToken)
	wrapper.SetWrappingLookupFunc(func(string, string) string { return wrapTTL.String() })
	s, err := wrapper.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || s.WrapInfo == nil {
		t.Fatalf("wrapping a secret ID: %v", err)
	}
	return s.WrapInfo.Token
}

// TestVaultWrappedSecretIDOutlivesMaxTTL uses an AppRole whose tokens
// live 2s (4s at most) and a response-wrapped secret ID: the relay must
// keep logging in past the max TTL (the wrapping token is unwrapped once,
// the secret ID kept), pick up a freshly delivered wrapping token, and a
// new start with a consumed wrapping token must say what to do.
func TestVaultWrappedSecretIDOutlivesMaxTTL(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "wrapped-flow-secret"})
	vs.PutPolicy("oauthrelay", relayPolicy)
	roleID, _ := vs.EnableAppRole("relay", "oauthrelay", 2*time.Second, 4*time.Second)
	dir := t.TempDir()
	first := wrappedSecretID(t, vs, "relay", time.Minute)
	secretFile := testutil.WriteFile(t, dir, "secret-id", first)
	auth := config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: vref(t, "file://"+secretFile), SecretIDWrapped: true, MountPath: "approle"}
	logs := &testutil.LogBuffer{}
	v := newVault(t, vaultConfig(vs.Addr, auth), logs)
	ref := vref(t, "vault://secret/oauthrelay/app#client_secret")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.KeepAlive(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Three logins: two of them after a max TTL, with the wrapping token
	// long consumed.
	testutil.WaitFor(t, 40*time.Second, "three logins", func() bool { logins, _ := v.Stats(); return logins >= 3 })
	if _, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, time.Hour)); err != nil {
		t.Fatalf("reading with the token of a later login: %v\n%s", err, logs.String())
	}
	if n := strings.Count(logs.String(), "unwrapped the response-wrapped AppRole secret ID"); n != 1 {
		t.Errorf("unwrapped %d times, want once", n)
	}

	// A fresh delivery is unwrapped at the next login.
	second := wrappedSecretID(t, vs, "relay", time.Minute)
	testutil.WriteFile(t, dir, "secret-id", second)
	testutil.WaitFor(t, 20*time.Second, "the fresh wrapping token to be unwrapped", func() bool {
		return strings.Count(logs.String(), "unwrapped the response-wrapped AppRole secret ID") == 2
	})

	// A restart with the consumed wrapping token fails, saying what to do.
	testutil.WriteFile(t, dir, "secret-id", first)
	restarted, err := secrets.NewVault(vaultConfig(vs.Addr, auth), secrets.ResolveLocal, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = restarted.Login(context.Background())
	if err == nil {
		t.Fatal("a consumed wrapping token logged in")
	}
	for _, want := range []string{"relay.hcl:7:3", "cannot be unwrapped", "works once", "vault write -wrap-ttl=10m -f auth/approle/role/<role>/secret-id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
	testutil.AssertNoSecrets(t, "logs and error", logs.String()+err.Error(), []string{first, second, "wrapped-flow-secret"})
}
