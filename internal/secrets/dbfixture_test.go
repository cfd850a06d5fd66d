package secrets_test

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if passwordPG.srv != nil {
		passwordPG.srv.Stop()
	}
	os.Exit(code)
}

const (
	pgSuperPassword    = "pg-super-Secret-0451"
	vaultAdminPassword = "vault-admin-Secret-9373"
	credsPath          = "database/creds/oauthrelay"
)

// The relay's Vault policy and the role's statements as the README
// recommends them: the tests prove that they are enough.
const (
	dbRelayPolicy = `
path "database/creds/oauthrelay" { capabilities = ["read"] }
path "sys/leases/renew"          { capabilities = ["update"] }
path "sys/leases/revoke"         { capabilities = ["update"] }
`
	dbCreationSQL = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
GRANT oauthrelay_owner TO "{{name}}";
GRANT "{{name}}" TO CURRENT_USER;`
	dbRevocationSQL = `REASSIGN OWNED BY "{{name}}" TO oauthrelay_owner;
DROP OWNED BY "{{name}}";
DROP ROLE IF EXISTS "{{name}}";`
	dbRenewSQL = `ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';`
)

// passwordPG is the test binary's PostgreSQL server with password
// authentication (the shared testutil.Postgres server trusts every login,
// so it could not show a password refused).
var passwordPG struct {
	once sync.Once
	srv  *testutil.PostgresServer
	err  error
}

// dbFixture is a database on passwordPG and a Vault dev server whose
// database secrets engine creates users in it (mount database/, role
// oauthrelay), through vault_admin: a CREATEROLE role, not a superuser.
type dbFixture struct {
	pg    *testutil.PostgresServer
	db    string
	vs    *testutil.VaultServer
	admin *pgx.Conn // the superuser, to look at roles
}

func newDBFixture(t *testing.T, ttl, maxTTL time.Duration) *dbFixture {
	t.Helper()
	passwordPG.once.Do(func() {
		srv, err := testutil.StartPostgresServer(testutil.PostgresOptions{Password: pgSuperPassword})
		if err == nil {
			err = srv.Exec("postgres", `CREATE ROLE oauthrelay_owner NOLOGIN;
CREATE ROLE vault_admin LOGIN CREATEROLE PASSWORD '`+vaultAdminPassword+`';
GRANT oauthrelay_owner TO vault_admin WITH ADMIN OPTION;`)
		}
		passwordPG.srv, passwordPG.err = srv, err
	})
	if passwordPG.err != nil {
		t.Fatal(passwordPG.err)
	}
	f := &dbFixture{pg: passwordPG.srv}
	var err error
	if f.db, err = f.pg.CreateDatabase(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.pg.DropDatabase(f.db) })
	if err := f.pg.Exec(f.db, "GRANT USAGE, CREATE ON SCHEMA public TO oauthrelay_owner"); err != nil {
		t.Fatal(err)
	}
	if f.admin, err = pgx.Connect(context.Background(), f.pg.DSN(f.db)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.admin.Close(context.Background()) })
	f.vs = testutil.StartVault(t)
	f.configureVault(t, ttl, maxTTL)
	return f
}

func (f *dbFixture) configureVault(t *testing.T, ttl, maxTTL time.Duration) {
	t.Helper()
	c := f.vs.Client
	if err := c.Sys().Mount("database", &vault.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"database/config/pg", map[string]any{
			"plugin_name":    "postgresql-database-plugin",
			"connection_url": "postgresql://{{username}}:{{password}}@" + f.pg.Addr + "/" + f.db + "?sslmode=disable",
			"username":       "vault_admin",
			"password":       vaultAdminPassword,
			"allowed_roles":  "oauthrelay",
		}},
		{"database/roles/oauthrelay", map[string]any{
			"db_name":               "pg",
			"creation_statements":   []string{dbCreationSQL},
			"revocation_statements": []string{dbRevocationSQL},
			"renew_statements":      []string{dbRenewSQL},
			"default_ttl":           int(ttl.Seconds()),
			"max_ttl":               int(maxTTL.Seconds()),
		}},
	}
	for _, w := range writes {
		if _, err := c.Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("vault write %s: %v", w.path, err)
		}
	}
}

// relayVault logs in as the relay does, with an AppRole that has only
// dbRelayPolicy, through addr; it returns the client, the AppRole secret
// ID (to look for in logs) and the metrics' registry.
func (f *dbFixture) relayVault(t *testing.T, addr string, logs *testutil.LogBuffer, tokenTTL, tokenMaxTTL time.Duration) (*secrets.Vault, string, *prometheus.Registry) {
	t.Helper()
	f.vs.PutPolicy("oauthrelay-db", dbRelayPolicy)
	roleID, secretID := f.vs.EnableAppRole("relay", "oauthrelay-db", tokenTTL, tokenMaxTTL)
	reg := prometheus.NewRegistry()
	auth := config.VaultAuth{Method: "approle", RoleID: config.NewLiteralSecret(roleID), SecretID: config.NewLiteralSecret(secretID), MountPath: "approle"}
	v, err := secrets.NewVault(vaultConfig(addr, auth), secrets.ResolveLocal, logs.Logger(t), secrets.NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v, secretID, reg
}

// connect opens a connection as user, or fails the test.
func (f *dbFixture) connect(t *testing.T, user, password string) *pgx.Conn {
	t.Helper()
	c, err := f.tryConnect(user, password)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (f *dbFixture) tryConnect(user, password string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("postgres://" + f.pg.Addr + "/" + f.db + "?sslmode=disable&connect_timeout=5")
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	return pgx.ConnectConfig(context.Background(), cfg)
}

// roleExists asks PostgreSQL whether the login role exists.
func (f *dbFixture) roleExists(t *testing.T, user string) bool {
	t.Helper()
	var ok bool
	if err := f.admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", user).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// validUntil is the role's VALID UNTIL, which Vault sets to the lease's
// end at creation and at each renewal.
func (f *dbFixture) validUntil(t *testing.T, user string) time.Time {
	t.Helper()
	var until time.Time
	if err := f.admin.QueryRow(context.Background(), "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&until); err != nil {
		t.Fatal(err)
	}
	return until
}

// execAll runs each statement on c, failing the test on an error.
func execAll(t *testing.T, c *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// metricValue sums the samples of a metric whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	samples:
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue samples
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// vaultLink is a TCP proxy between the relay and Vault that can be cut,
// like a network partition: it then drops the connections it carries and
// every new one at once.
type vaultLink struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func newVaultLink(t *testing.T, vaultAddr string) *vaultLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &vaultLink{ln: ln, target: strings.TrimPrefix(vaultAddr, "http://"), conns: map[net.Conn]bool{}}
	go l.serve()
	t.Cleanup(func() { ln.Close(); l.setCut(true) })
	return l
}

// Addr is the Vault address the relay is given.
func (l *vaultLink) Addr() string { return "http://" + l.ln.Addr().String() }

func (l *vaultLink) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			c.Close()
		}
	}
}

func (l *vaultLink) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.carry(c)
	}
}

// carry forwards one connection both ways until either side closes.
func (l *vaultLink) carry(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		return
	}
	defer up.Close()
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		return
	}
	l.conns[c], l.conns[up] = true, true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		delete(l.conns, up)
		l.mu.Unlock()
	}()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
}
