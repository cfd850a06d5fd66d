package iac

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/zclconf/go-cty/cty"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestVaultIssuesRelayUsersWithTheModuleStatements runs what
// modules/database configures (the connection, the role's creation
// statements with the owner-role bootstrap and its revocation statements,
// rotate-root) in a real Vault against a real PostgreSQL whose root user is,
// like RDS's master user, no superuser; the relay's side goes through
// modules/vault's policy: read a user, connect as it, SET ROLE, create
// tables, renew, revoke.
func TestVaultIssuesRelayUsersWithTheModuleStatements(t *testing.T) {
	srv, err := testutil.StartPostgresServer(testutil.PostgresOptions{PasswordAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	rootPassword := randomPassword(t)
	db := rdsLikeDatabase(t, srv, "vault_root", rootPassword)
	e := evalDatabaseEngine(t, srv.Addr, db, rootPassword)
	url, _ := e.connection["connection_url"].(string)
	if !strings.Contains(url, "sslmode=verify-full") {
		t.Fatalf("connection_url %q does not verify the server", url)
	}
	// The test server speaks no TLS; RDS does (rds.force_ssl).
	e.connection["connection_url"] = strings.Replace(url, "sslmode=verify-full", "sslmode=disable", 1)

	v := testutil.StartVault(t)
	e.apply(t, v)
	if _, err := srv.QueryAs(e.rootUser, rootPassword, db, "SELECT 1"); err == nil {
		t.Error("the master password Terraform generated still works after rotate-root")
	}

	v.PutPolicy("oauthrelay", relayPolicyFor(t, cty.StringVal(e.credentialsPath)))
	relay := tokenClient(t, v, "oauthrelay")
	// Instances that start together ask together, before the owner role
	// exists.
	users := readUsersAtOnce(t, relay, e.credentialsPath, 3)

	owner := e.ownerRole
	for _, tc := range []struct{ user, sql string }{
		{users[0].name, "SET ROLE " + owner + "; CREATE TABLE queue_probe (id int); INSERT INTO queue_probe VALUES (42)"},
		// A relay that forgot SET ROLE: its user owns the table.
		{users[1].name, "CREATE TABLE stray_probe (id int)"},
	} {
		if _, err := srv.QueryAs(tc.user, users.password(tc.user), db, tc.sql); err != nil {
			t.Fatalf("as %s: %v", tc.user, err)
		}
	}
	if _, err := srv.QueryAs(users[2].name, "not-"+users[2].password, db, "SELECT 1"); err == nil {
		t.Fatal("a wrong password logs in: the server does not check passwords")
	}
	if _, err := relay.Sys().Renew(users[0].lease, 3600); err != nil {
		t.Errorf("renewing the lease with the relay's policy: %v", err)
	}

	// A session still open when its user's lease ends is ended, not left
	// failing with "invalid role OID".
	session := openSession(t, srv, users[0], db)
	for _, u := range users {
		if err := relay.Sys().Revoke(u.lease); err != nil {
			t.Fatalf("revoking %s's lease with the relay's policy: %v", u.name, err)
		}
	}
	select {
	case err := <-session:
		if err == nil || !strings.Contains(err.Error(), "terminating connection") {
			t.Errorf("the revoked user's session ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the revoked user's session still runs")
	}
	for query, want := range map[string]string{
		"SELECT count(*) FROM pg_roles WHERE rolname IN (" + users.quotedNames() + ")":                                          "0",
		"SELECT string_agg(tablename || ' ' || tableowner, ', ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'": "queue_probe " + owner + ", stray_probe " + owner,
		"SELECT id FROM queue_probe": "42",
	} {
		if got, err := srv.QueryAs(srv.User, "", db, query); err != nil || got != want {
			t.Errorf("after revocation, %s = %q (%v), want %q", query, got, err, want)
		}
	}

	// The next user finds the relay's data, through the owner role.
	next := readUsersAtOnce(t, relay, e.credentialsPath, 1)[0]
	if got, err := srv.QueryAs(next.name, next.password, db, "SET ROLE "+owner+"; SELECT id FROM queue_probe"); err != nil || got != "42" {
		t.Errorf("a new user reads %q (%v), want 42", got, err)
	}
	checkRelayCannotManageTheEngine(t, relay, e)
}

// rdsLikeDatabase makes a database owned by a root user with RDS's master
// user's rights (CREATEROLE, CREATEDB, no superuser), hardened so that only
// roles granted it may connect.
func rdsLikeDatabase(t *testing.T, srv *testutil.PostgresServer, root, password string) string {
	t.Helper()
	db, err := srv.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE CREATEDB PASSWORD '%s'", root, password),
		fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, root),
		fmt.Sprintf("REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC", db),
		fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", db, root),
	} {
		if err := srv.Exec("postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

type dbUser struct{ name, password, lease string }

type dbUsers []dbUser

func (us dbUsers) password(name string) string {
	for _, u := range us {
		if u.name == name {
			return u.password
		}
	}
	return ""
}

func (us dbUsers) quotedNames() string {
	names := make([]string, len(us))
	for i, u := range us {
		names[i] = "'" + u.name + "'"
	}
	return strings.Join(names, ", ")
}

// readUsersAtOnce reads n users from Vault concurrently.
func readUsersAtOnce(t *testing.T, c *vault.Client, path string, n int) dbUsers {
	t.Helper()
	users := make(dbUsers, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Logical().Read(path)
			if err != nil || s == nil {
				errs[i] = fmt.Errorf("reading %s: %v", path, err)
				return
			}
			name, _ := s.Data["username"].(string)
			password, _ := s.Data["password"].(string)
			users[i] = dbUser{name, password, s.LeaseID}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return users
}

// checkRelayCannotManageTheEngine: the relay's policy reads users, nothing
// of the engine's configuration.
func checkRelayCannotManageTheEngine(t *testing.T, relay *vault.Client, e databaseEngine) {
	t.Helper()
	if _, err := relay.Logical().Read(e.connectionPath); !isForbidden(err) {
		t.Errorf("the relay reads the connection: %v", err)
	}
	for _, path := range []string{e.rotateRootPath, e.rolePath} {
		if _, err := relay.Logical().Write(path, map[string]any{}); !isForbidden(err) {
			t.Errorf("the relay writes %s: %v", path, err)
		}
	}
}

func isForbidden(err error) bool {
	resp, ok := err.(*vault.ResponseError)
	return ok && resp.StatusCode == 403
}

// openSession starts a long query as u and returns once the server runs
// it; the channel reports how the session ended.
func openSession(t *testing.T, srv *testutil.PostgresServer, u dbUser, db string) <-chan error {
	t.Helper()
	ended := make(chan error, 1)
	go func() {
		_, err := srv.QueryAs(u.name, u.password, db, "SELECT pg_sleep(120)")
		ended <- err
	}()
	query := "SELECT count(*) FROM pg_stat_activity WHERE usename = '" + u.name + "' AND state = 'active'"
	testutil.WaitFor(t, 30*time.Second, u.name+"'s session", func() bool {
		n, err := srv.QueryAs(srv.User, "", db, query)
		return err == nil && n == "1"
	})
	return ended
}
