package app

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/store/postgres"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// sharedStoreConfig writes a configuration whose store is the PostgreSQL
// database of dsn.
func sharedStoreConfig(t *testing.T, dsn string) string {
	t.Helper()
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.Tokens.AddClient("relay", "client-secret-5e2a")
	rt := sb.Tokens.IssueRefreshToken("relay", qAlice, config.GoogleScope)
	dir := t.TempDir()
	return testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
listener "direct" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
store {
  postgres {
    dsn                = %q
    expected_instances = 2
  }
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = %q
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "client-secret-5e2a"
  account %q { refresh_token = "file://%s" }
  client %q { password_hash = %q }
}
`, dsn, sb.Tokens.URL, sb.SMTP.Addr, testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM)),
		qAlice, testutil.WriteFile(t, dir, "rt", rt), qClient, testutil.FastHash(t, "pw")))
}

// schemaVersion is the newest migration applied to dsn's database (-1:
// none, not even the schema_version table).
func schemaVersion(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return -1
	}
	v := 0
	if err := conn.QueryRow(t.Context(), `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCheckAndQueueLeaveTheSharedSchemaAlone: `check` and `queue` run
// beside the relay (or before it, on a new version's binary) and must not
// migrate the shared database: against an empty or older schema they
// fail, saying to start the relay, and leave the schema as it was;
// against the current one they work.
func TestCheckAndQueueLeaveTheSharedSchemaAlone(t *testing.T) {
	_, dsn := testutil.Postgres(t)
	path := sharedStoreConfig(t, dsn)
	commands := [][]string{{"check", "-config", path}, {"queue", "list", "-config", path}}
	expect := func(state string, wantCode int, wantText string) {
		t.Helper()
		before := schemaVersion(t, dsn)
		for _, args := range commands {
			code, out, errOut := run(t, "", args...)
			if code != wantCode || !strings.Contains(out+errOut, wantText) {
				t.Errorf("%s against %s: exit %d, want %d saying %q\nstdout: %s\nstderr: %s", args[0], state, code, wantCode, wantText, out, errOut)
			}
			if after := schemaVersion(t, dsn); after != before {
				t.Fatalf("%s against %s changed the schema version from %d to %d", args[0], state, before, after)
			}
		}
	}
	expect("an empty database", 1, "start the relay (oauthrelay run), which migrates it")

	st, err := postgres.Open(t.Context(), dsn, postgres.Options{}) // what the relay does at start
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	latest := schemaVersion(t, dsn)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `DELETE FROM schema_version WHERE version = $1`, latest); err != nil {
		t.Fatal(err)
	}
	expect("an older schema", 1, fmt.Sprintf("the database has version %d, this oauthrelay needs %d", latest-1, latest))

	if _, err := conn.Exec(t.Context(), `INSERT INTO schema_version (version, name) VALUES ($1, 'again')`, latest); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", commands[0]...)
	if code != 0 || !strings.Contains(out, "ready to run") {
		t.Errorf("check against the current schema: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = run(t, "", commands[1]...)
	if code != 0 {
		t.Errorf("queue list against the current schema: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
