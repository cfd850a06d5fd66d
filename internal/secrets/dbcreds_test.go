package secrets_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestDatabaseCredentialsRenewedRotatedAndRevoked follows one set of
// credentials through its life with a role whose leases last 6s, 11s at
// most: they log in and create a table after SET ROLE; the lease is
// renewed (Vault moves VALID UNTIL); at the max TTL new credentials arrive
// while the old ones still log in, and the rotation callback fires; the
// old role is dropped at its lease's end while a connection opened with it
// keeps working; Close revokes the current lease.
func TestDatabaseCredentialsRenewedRotatedAndRevoked(t *testing.T) {
	t.Parallel()
	f := newDBFixture(t, 6*time.Second, 11*time.Second)
	logs := &testutil.LogBuffer{}
	v, secretID, _ := f.relayVault(t, f.vs.Addr, logs, time.Hour, time.Hour)
	ctx := context.Background()

	_, refused := v.DatabaseCredentials(ctx, "database/creds/elsewhere")
	if refused == nil || !strings.Contains(refused.Error(), "database/creds/elsewhere") || !strings.Contains(refused.Error(), "403") {
		t.Fatalf("a path the policy does not allow: %v, want a 403 naming the path", refused)
	}
	creds, err := v.DatabaseCredentials(ctx, credsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = creds.Close() })
	rotated := make(chan struct{}, 10)
	creds.OnRotate(func() { rotated <- struct{}{} })
	first := creds.Status()
	user1, pw1 := creds.Current()
	// The log redaction learns the passwords, those held when it is set
	// up and every later one.
	redact := newHookRecorder()
	v.SetValueHook(redact.set)
	key := keyHolding(redact, pw1)
	if !strings.HasPrefix(key, "vault:database:"+credsPath) {
		t.Errorf("the value hook was told the password under %q", key)
	}

	// (a) The credentials log in; tables belong to the owner role.
	conn1 := f.connect(t, user1, pw1)
	execAll(t, conn1, "SET ROLE oauthrelay_owner", "CREATE TABLE deliveries (id int)", "INSERT INTO deliveries VALUES (1)")
	if _, err := f.tryConnect(user1, pw1+"x"); err == nil {
		t.Fatal("a wrong password logged in: PostgreSQL does not check passwords")
	}

	// (b) The lease is renewed before any rotation.
	testutil.WaitFor(t, 10*time.Second, "a renewal", func() bool { return creds.Status().Expiry.After(first.Expiry.Add(time.Second)) })
	if len(rotated) > 0 || creds.Status().User != user1 {
		t.Fatal("rotated before the first renewal")
	}
	if until := f.validUntil(t, user1); !until.After(first.Expiry.Add(time.Second)) {
		t.Errorf("VALID UNTIL %v did not move past the first lease's end %v", until, first.Expiry)
	}

	// (c) At the max TTL new credentials arrive before the old expire.
	old := creds.Status()
	testutil.WaitFor(t, 15*time.Second, "new credentials", func() bool {
		if s := creds.Status(); s.User == user1 {
			old = s
			return false
		}
		return true
	})
	user2, pw2 := creds.Current()
	if left := time.Until(old.Expiry); left < time.Second {
		t.Errorf("rotated %v before the old lease's end, want a second at least", left)
	}
	select {
	case <-rotated:
	case <-time.After(5 * time.Second):
		t.Fatal("the rotation callback did not fire")
	}
	if redact.current(key) != pw2 || redact.current(key+" (previous)") != pw1 {
		t.Error("the value hook was not told the new password, and the old one as previous")
	}
	lateOld := f.connect(t, user1, pw1) // the pool may still open one
	execAll(t, lateOld, "SET ROLE oauthrelay_owner")
	conn2 := f.connect(t, user2, pw2)
	execAll(t, conn2, "SET ROLE oauthrelay_owner", "INSERT INTO deliveries VALUES (2)")
	execAll(t, conn1, "INSERT INTO deliveries VALUES (3)")

	// The old lease ends: Vault drops the role and its password no longer
	// logs in, but connections opened with it finish their work.
	testutil.WaitFor(t, 10*time.Second, "the old role to be dropped at its lease's end", func() bool { return !f.roleExists(t, user1) })
	if _, err := f.tryConnect(user1, pw1); err == nil {
		t.Error("the old password still logs in after its lease ended")
	}
	execAll(t, conn1, "INSERT INTO deliveries VALUES (4)")
	execAll(t, lateOld, "INSERT INTO deliveries VALUES (5)")
	var n int
	if err := conn2.QueryRow(ctx, "SELECT count(*) FROM deliveries").Scan(&n); err != nil || n != 5 {
		t.Errorf("rows = %d, %v; want 5", n, err)
	}

	// Close revokes the current lease at once.
	if err := creds.Close(); err != nil {
		t.Fatal(err)
	}
	if f.roleExists(t, user2) {
		t.Error("the current role survived Close")
	}
	_, _, cerr := creds.Credentials(ctx)
	if cerr == nil {
		t.Error("Credentials after Close succeeded")
	}
	out := logs.String() + refused.Error() + cerr.Error()
	for _, want := range []string{"renewed the database credentials' lease", "cannot be extended further", "new database credentials from Vault", "reason=max_ttl", "revoked the database credentials' lease"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	testutil.AssertNoSecrets(t, "logs and errors", out, []string{pw1, pw2, secretID, vaultAdminPassword, pgSuperPassword})
}

// TestDatabaseCredentialsRecoverAfterVaultOutage cuts the relay off Vault
// before the first renewal of a 4s lease: the renewal and the reads of new
// credentials fail (logged and counted), the credentials expire, and new
// ones are read as soon as Vault is reachable again.
func TestDatabaseCredentialsRecoverAfterVaultOutage(t *testing.T) {
	t.Parallel()
	f := newDBFixture(t, 4*time.Second, time.Minute)
	link := newVaultLink(t, f.vs.Addr)
	logs := &testutil.LogBuffer{}
	v, secretID, reg := f.relayVault(t, link.Addr(), logs, time.Hour, time.Hour)
	ctx := context.Background()
	creds, err := v.DatabaseCredentials(ctx, credsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = creds.Close() })
	user1, pw1 := creds.Current()
	if _, _, err := creds.Credentials(ctx); err != nil {
		t.Fatal(err)
	}

	link.setCut(true)
	var expired error
	testutil.WaitFor(t, 15*time.Second, "the credentials to expire without Vault", func() bool {
		_, _, expired = creds.Credentials(ctx)
		return expired != nil
	})
	for _, want := range []string{credsPath, "expired at", "no new ones can be read"} {
		if !strings.Contains(expired.Error(), want) {
			t.Errorf("error lacks %q: %v", want, expired)
		}
	}
	path := map[string]string{"path": credsPath}
	if got := metricValue(t, reg, "oauthrelay_vault_database_lease_renewals_total", map[string]string{"path": credsPath, "result": "failure"}); got != 1 {
		t.Errorf("renewal failures = %v, want 1", got)
	}
	failedReads := metricValue(t, reg, "oauthrelay_vault_database_credential_read_failures_total", path)
	if failedReads < 2 {
		t.Errorf("failed reads = %v, want several", failedReads)
	}
	if up := metricValue(t, reg, "oauthrelay_vault_up", nil); up != 0 {
		t.Errorf("oauthrelay_vault_up = %v during the outage", up)
	}
	failures := strings.Count(logs.String(), "cannot read new database credentials") + strings.Count(logs.String(), "Vault gives no new ones")
	if failures < int(failedReads) {
		t.Errorf("%d failure log lines for %v failed reads, want one each", failures, failedReads)
	}

	link.setCut(false)
	testutil.WaitFor(t, 10*time.Second, "new credentials after Vault is back", func() bool { _, _, err := creds.Credentials(ctx); return err == nil })
	user2, pw2 := creds.Current()
	if user2 == user1 {
		t.Fatal("the expired credentials are still in use")
	}
	execAll(t, f.connect(t, user2, pw2), "SET ROLE oauthrelay_owner", "CREATE TABLE t (x int)")
	if got := metricValue(t, reg, "oauthrelay_vault_database_credential_rotations_total", map[string]string{"path": credsPath, "reason": "renewal_failed"}); got != 1 {
		t.Errorf("rotations after a failed renewal = %v, want 1", got)
	}
	if up := metricValue(t, reg, "oauthrelay_vault_up", nil); up != 1 {
		t.Errorf("oauthrelay_vault_up = %v after the outage", up)
	}
	if exp := metricValue(t, reg, "oauthrelay_vault_database_lease_expiry_timestamp_seconds", path); int64(exp) != creds.Status().Expiry.Unix() {
		t.Errorf("lease expiry metric %v, want %v", exp, creds.Status().Expiry.Unix())
	}
	testutil.AssertNoSecrets(t, "logs and errors", logs.String()+expired.Error(), []string{pw1, pw2, secretID, vaultAdminPassword})
}

// TestDatabaseCredentialsFollowVaultRelogin gives the relay Vault tokens
// that live 4s at most: a lease ends with the token that read it, so
// each new login brings new credentials, long before the leases' own
// 60s, and the first role is dropped when the first token ends.
func TestDatabaseCredentialsFollowVaultRelogin(t *testing.T) {
	t.Parallel()
	f := newDBFixture(t, time.Minute, 2*time.Minute)
	logs := &testutil.LogBuffer{}
	v, secretID, reg := f.relayVault(t, f.vs.Addr, logs, 2*time.Second, 4*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.KeepAlive(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	creds, err := v.DatabaseCredentials(context.Background(), credsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = creds.Close() })
	user1, pw1 := creds.Current()

	testutil.WaitFor(t, 15*time.Second, "new credentials after a new login", func() bool { return creds.Status().User != user1 })
	if got := metricValue(t, reg, "oauthrelay_vault_database_credential_rotations_total", map[string]string{"path": credsPath, "reason": "relogin"}); got < 1 {
		t.Errorf("rotations for a new login = %v", got)
	}
	testutil.WaitFor(t, 10*time.Second, "the first role to end with the first token", func() bool { return !f.roleExists(t, user1) })
	user, pw := creds.Current()
	execAll(t, f.connect(t, user, pw), "SET ROLE oauthrelay_owner", "CREATE TABLE t (x int)")
	// Close revokes the current lease and the superseded ones; those
	// that ended with their token are no error.
	if err := creds.Close(); err != nil {
		t.Error(err)
	}
	if f.roleExists(t, user) {
		t.Error("the current role survived Close")
	}
	testutil.AssertNoSecrets(t, "logs", logs.String(), []string{pw1, pw, secretID})
}

// TestDatabaseCredentialsSuccessor: a reload's credentials for the same
// path start before their predecessor is closed; closing it revokes its
// role only, and leaves the successor's expiry metric and password
// redaction in place.
func TestDatabaseCredentialsSuccessor(t *testing.T) {
	t.Parallel()
	f := newDBFixture(t, time.Minute, time.Hour)
	v, _, reg := f.relayVault(t, f.vs.Addr, &testutil.LogBuffer{}, time.Hour, time.Hour)
	ctx := context.Background()
	var creds [2]*secrets.DatabaseCredentials
	for i := range creds {
		c, err := v.DatabaseCredentials(ctx, credsPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		creds[i] = c
	}
	oldUser, oldPassword := creds[0].Current()
	user, password := creds[1].Current()
	if err := creds[0].Close(); err != nil {
		t.Fatal(err)
	}
	if f.roleExists(t, oldUser) || !f.roleExists(t, user) {
		t.Fatalf("after closing the predecessor: its role exists %v, the successor's %v", f.roleExists(t, oldUser), f.roleExists(t, user))
	}
	if exp := metricValue(t, reg, "oauthrelay_vault_database_lease_expiry_timestamp_seconds", map[string]string{"path": credsPath}); int64(exp) != creds[1].Status().Expiry.Unix() {
		t.Errorf("lease expiry metric %v, want the successor's %v", exp, creds[1].Status().Expiry.Unix())
	}
	redact := newHookRecorder()
	v.SetValueHook(redact.set)
	if !redact.has(password) || redact.has(oldPassword) {
		t.Errorf("a new value hook knows the successor's password: %v, the revoked one: %v", redact.has(password), redact.has(oldPassword))
	}
}

// TestDatabaseCredentialsRefusals: a path that holds no dynamic role is
// refused at once, naming the path.
func TestDatabaseCredentialsRefusals(t *testing.T) {
	t.Parallel()
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/db", map[string]any{"password": "kv-db-password"})
	v := newVault(t, vaultConfig(vs.Addr, rootAuth()), &testutil.LogBuffer{})
	for path, want := range map[string]string{
		"":                          "no Vault path",
		"database/creds/oauthrelay": "database/creds/oauthrelay: Vault has nothing there",
		"secret/data/oauthrelay/db": "no username and password",
	} {
		_, err := v.DatabaseCredentials(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", path, err, want)
			continue
		}
		testutil.AssertNoSecrets(t, "error", err.Error(), []string{"kv-db-password"})
	}
}

// keyHolding is the key under which h holds value ("" if none).
func keyHolding(h *hookRecorder, value string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, v := range h.byKey {
		if v == value {
			return k
		}
	}
	return ""
}

func rootAuth() config.VaultAuth {
	return config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)}
}
