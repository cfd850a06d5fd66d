package postgres

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// vaultCreds holds the credentials a real Vault's database secrets engine
// issued last, as the relay's secrets layer would: every new connection
// uses them, and rotate reads new ones.
type vaultCreds struct {
	v    *testutil.VaultServer
	mu   sync.Mutex
	user string
	pass string
	// leases lists every lease read, oldest first; passwords, every
	// password issued.
	leases, passwords []string
}

func (c *vaultCreds) rotate(t *testing.T) {
	t.Helper()
	s, err := c.v.Client.Logical().Read("database/creds/relay")
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.user, c.pass = s.Data["username"].(string), s.Data["password"].(string)
	c.leases, c.passwords = append(c.leases, s.LeaseID), append(c.passwords, c.pass)
}

func (c *vaultCreds) get(context.Context) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user, c.pass, nil
}

// With users issued by Vault's database secrets engine (Vault's own
// PostgreSQL plugin, creating and dropping login roles in the test's
// server) and Options.Role, the store moves to new credentials, and Vault
// can then revoke the old user: it owns nothing, the role owns the
// tables.
func TestVaultDynamicCredentials(t *testing.T) {
	db := newTestDB(t)
	dsn := db.store(t)
	schema := fmt.Sprintf("store_%d", db.next.Load())
	owner := vaultUsers(t, db, schema)
	v := testutil.StartVault(t)
	configureVaultDatabase(t, v, db, owner)
	creds := &vaultCreds{v: v}
	creds.rotate(t)
	logs := new(testutil.LogBuffer)
	s := openTest(t, withoutUser(dsn), Options{Role: owner, Credentials: creds.get, Logger: logs.Logger(t)})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	first := creds.user
	creds.rotate(t)
	s.RotateConnections()
	if err := s.Enqueue(ctx, testMsg("m2")); err != nil {
		t.Fatalf("Enqueue with the new credentials: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the first user's sessions to close", func() bool {
		return !slices.Contains(sessionUsers(t, db, first, creds.user), first)
	})
	if err := v.Client.Sys().Revoke(creds.leases[0]); err != nil {
		t.Fatalf("Vault could not revoke the first user: %v", err)
	}
	var left bool
	if err := db.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, first).Scan(&left); err != nil || left {
		t.Errorf("the first user is still there after its revocation (%v)", err)
	}
	claimed, err := s.Claim(ctx, "w1", time.Now(), 10, time.Minute, nil)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim with the second user: %d messages, %v", len(claimed), err)
	}
	if err := s.Finish(ctx, "m1", "w1", delivered(time.Now())); err != nil {
		t.Fatal(err)
	}
	testutil.AssertNoSecrets(t, "the store's logs", logs.String(), creds.passwords)
}

// configureVaultDatabase mounts Vault's database secrets engine on the
// test's server with a role "relay" whose users are members of owner.
func configureVaultDatabase(t *testing.T, v *testutil.VaultServer, db *testDB, owner string) {
	t.Helper()
	if err := v.Client.Sys().Mount("database", &vault.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(db.dsn)
	_, err := v.Client.Logical().Write("database/config/pg", map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": "postgresql://{{username}}:{{password}}@" + u.Host + u.Path + "?sslmode=disable",
		"username":       db.srv.User,
		"password":       "unused-trust-auth",
		"allowed_roles":  "relay",
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Client.Logical().Write("database/roles/relay", map[string]any{
		"db_name":             "pg",
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE ` + owner + `;`},
		"default_ttl":         "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
}

// withoutUser is dsn without its user: the credentials come from Vault.
func withoutUser(dsn string) string {
	u, _ := url.Parse(dsn)
	u.User = nil
	return u.String()
}
