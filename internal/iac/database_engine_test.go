package iac

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"strconv"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	vault "github.com/hashicorp/vault/api"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// databaseEngine is what modules/database writes to Vault, evaluated from
// its source for a database at a given address.
type databaseEngine struct {
	mount, credentialsPath string
	connectionPath         string
	connection             map[string]any
	rolePath               string
	role                   map[string]any
	rotateRootPath         string
	rootUser, ownerRole    string
}

// evalDatabaseEngine evaluates the module's Vault resources with the RDS
// instance, and the generated master password, standing in as given.
func evalDatabaseEngine(t *testing.T, addr, dbName, rootPassword string) databaseEngine {
	t.Helper()
	blocks := moduleBlocks(t, databaseModule)
	defaults := varDefaults(t, blocks)
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	resources := rdsStandIn(host, port, dbName, defaults["master_username"].AsString())
	resources["random_password"] = cty.ObjectVal(map[string]cty.Value{
		"master": cty.ObjectVal(map[string]cty.Value{"result": cty.StringVal(rootPassword)}),
	})
	ctx := moduleContext(t, databaseModule, nil, resources)

	mount := findBlock(t, blocks, "resource", "vault_mount", "database")
	conn := findBlock(t, blocks, "resource", "vault_database_secret_backend_connection", "relay")
	role := findBlock(t, blocks, "resource", "vault_database_secret_backend_role", "relay")
	if got := constant(t, attr(t, mount, "type")).AsString(); got != "database" {
		t.Fatalf("vault_mount.database has type %q", got)
	}
	// Each resource's name attribute is its name argument.
	ctx.Variables["vault_mount"] = cty.ObjectVal(map[string]cty.Value{"database": cty.TupleVal([]cty.Value{
		cty.ObjectVal(map[string]cty.Value{"path": evalIn(t, attr(t, mount, "path"), ctx)}),
	})})
	ctx.Variables["vault_database_secret_backend_connection"] = cty.ObjectVal(map[string]cty.Value{
		"relay": cty.ObjectVal(map[string]cty.Value{"name": evalIn(t, attr(t, conn, "name"), ctx)}),
	})
	ctx.Variables["vault_database_secret_backend_role"] = cty.ObjectVal(map[string]cty.Value{
		"relay": cty.ObjectVal(map[string]cty.Value{"name": evalIn(t, attr(t, role, "name"), ctx)}),
	})
	evalLocals(blocks, ctx)

	e := databaseEngine{rootUser: defaults["master_username"].AsString(), ownerRole: defaults["owner_role"].AsString()}
	e.mount = evalIn(t, attr(t, conn, "backend"), ctx).AsString()
	e.credentialsPath = evalIn(t, localExpr(t, blocks, "credentials_path"), ctx).AsString()
	e.connectionPath = e.mount + "/config/" + evalIn(t, attr(t, conn, "name"), ctx).AsString()
	e.connection = evalArguments(t, conn, ctx, "plugin_name", "allowed_roles")
	pg := nestedBlocks(conn, "postgresql")
	if len(pg) != 1 {
		t.Fatal("the connection has no postgresql block")
	}
	// tls_ca stays out: the test server speaks no TLS (and Vault 1.14 has
	// no tls_ca); TestDatabaseRefusesConnectionsWithoutTLS checks it.
	for k, v := range evalArguments(t, pg[0], ctx, "connection_url", "username", "password", "password_authentication") {
		e.connection[k] = v
	}
	e.rolePath = e.mount + "/roles/" + evalIn(t, attr(t, role, "name"), ctx).AsString()
	e.role = evalArguments(t, role, ctx, "db_name", "creation_statements", "revocation_statements", "default_ttl", "max_ttl")
	e.rotateRootPath = evalIn(t, attr(t, findBlock(t, blocks, "resource", "vault_generic_endpoint", "rotate_root"), "path"), ctx).AsString()
	return e
}

// evalArguments evaluates a block's arguments into what Vault's API takes.
func evalArguments(t *testing.T, b *hclsyntax.Block, ctx *hcl.EvalContext, names ...string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, name := range names {
		v := evalIn(t, attr(t, b, name), ctx)
		encoded, err := ctyjson.Marshal(v, v.Type())
		var decoded any
		if err == nil {
			err = json.Unmarshal(encoded, &decoded)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[name] = decoded
	}
	return out
}

// apply writes the engine to Vault as Terraform does: mount, connection
// (Vault logs in to check it), role, then rotate-root.
func (e databaseEngine) apply(t *testing.T, v *testutil.VaultServer) {
	t.Helper()
	if err := v.Client.Sys().Mount(e.mount, &vault.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		path string
		data map[string]any
	}{{e.connectionPath, e.connection}, {e.rolePath, e.role}, {e.rotateRootPath, nil}} {
		if _, err := v.Client.Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("writing %s as modules/database does: %v", w.path, err)
		}
	}
}

func randomPassword(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
