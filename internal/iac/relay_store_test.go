package iac

import (
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// exampleStore is the database as modules/database describes it to the
// relay module (its relay_store output).
var exampleStore = cty.ObjectVal(map[string]cty.Value{
	"address":          cty.StringVal("oauthrelay.abc123.eu-west-1.rds.amazonaws.com"),
	"port":             cty.NumberIntVal(5432),
	"database":         cty.StringVal("oauthrelay"),
	"credentials_path": cty.StringVal("database/creds/oauthrelay"),
	"owner_role":       cty.StringVal("oauthrelay_owner"),
})

// relayConfigFiles evaluates the relay module's configuration files, as the
// example calls it, with database (null: none).
func relayConfigFiles(t *testing.T, database cty.Value) (files map[string]string, ctx *hcl.EvalContext) {
	t.Helper()
	ctx = moduleContext(t, relayModule, map[string]cty.Value{
		"config_dir": cty.StringVal(filepath.Join(root, exampleDir, "config")),
		"database":   database,
	}, nil)
	files = map[string]string{}
	for name, v := range evalIn(t, localExpr(t, moduleBlocks(t, relayModule), "config_files"), ctx).AsValueMap() {
		files[name] = v.AsString()
	}
	return files, ctx
}

func TestRelayStoreBlockOnlyWithTheDatabase(t *testing.T) {
	gitFiles, _ := relayConfigFiles(t, cty.NullVal(exampleStore.Type()))
	if got := slices.Sorted(maps.Keys(gitFiles)); !slices.Equal(got, []string{"10-relay.hcl"}) {
		t.Fatalf("without the database the instances get %v, want config/'s files only", got)
	}
	files, ctx := relayConfigFiles(t, exampleStore)
	var added []string
	for name, content := range files {
		if _, ok := gitFiles[name]; !ok {
			added = append(added, name)
		} else if content != gitFiles[name] {
			t.Errorf("%s differs with the database", name)
		}
	}
	if len(added) != 1 {
		t.Fatalf("the database adds %v, want one file", added)
	}
	postgres := storePostgresBlock(t, added[0], files[added[0]])
	attrs := map[string]cty.Value{}
	for name, a := range postgres.Body.Attributes {
		attrs[name] = constant(t, a.Expr)
	}
	defaults := varDefaults(t, moduleBlocks(t, relayModule))
	want := map[string]cty.Value{
		"dsn":                cty.StringVal("postgres://oauthrelay.abc123.eu-west-1.rds.amazonaws.com:5432/oauthrelay?sslmode=verify-full&sslrootcert=" + defaults["database_ca_file"].AsString()),
		"vault_credentials":  cty.StringVal("database/creds/oauthrelay"),
		"role":               cty.StringVal("oauthrelay_owner"),
		"expected_instances": ctx.Variables["local"].GetAttr("max_instances"),
	}
	if !maps.EqualFunc(attrs, want, cty.Value.RawEquals) {
		t.Errorf("store.postgres = %#v, want %#v", attrs, want)
	}
	if dsn, err := url.Parse(attrs["dsn"].AsString()); err != nil || dsn.User != nil {
		t.Errorf("the DSN names a user or does not parse (%v): the relay's user comes from Vault", err)
	}
	if n, _ := want["expected_instances"].AsBigFloat().Int64(); n < 3 {
		t.Errorf("expected_instances = %d for 2 instances: the refresh's extra instances are not counted", n)
	}
}

// storePostgresBlock parses a rendered store file: one store block with no
// local path (instances keep no state) holding one postgres block.
func storePostgresBlock(t *testing.T, name, content string) *hclsyntax.Block {
	t.Helper()
	file, diags := hclsyntax.ParseConfig([]byte(content), name, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s does not parse: %v\n%s", name, diags, content)
	}
	body := file.Body.(*hclsyntax.Body)
	if len(body.Blocks) != 1 || body.Blocks[0].Type != "store" {
		t.Fatalf("%s is not one store block:\n%s", name, content)
	}
	store := body.Blocks[0]
	if len(store.Body.Attributes) != 0 || len(store.Body.Blocks) != 1 || store.Body.Blocks[0].Type != "postgres" {
		t.Fatalf("the store block holds more than a postgres block (a local path?):\n%s", content)
	}
	return store.Body.Blocks[0]
}

// TestRelayModuleTakesWhatTheDatabaseGives: the relay module's database
// input has the attributes of modules/database's relay_store output.
func TestRelayModuleTakesWhatTheDatabaseGives(t *testing.T) {
	typ, ok := attr(t, findBlock(t, moduleBlocks(t, relayModule), "variable", "database"), "type").(*hclsyntax.FunctionCallExpr)
	if !ok || typ.Name != "object" || len(typ.Args) != 1 {
		t.Fatal("the relay's database variable is not an object({…})")
	}
	output := attr(t, findBlock(t, moduleBlocks(t, databaseModule), "output", "relay_store"), "value")
	if got, want := objectKeys(t, typ.Args[0]), objectKeys(t, output); !slices.Equal(got, want) {
		t.Errorf("modules/relay takes %v, modules/database gives %v", got, want)
	}
	if got, want := slices.Sorted(maps.Keys(exampleStore.AsValueMap())), objectKeys(t, output); !slices.Equal(got, want) {
		t.Errorf("the tests' exampleStore has %v, the module gives %v", got, want)
	}
}

func objectKeys(t *testing.T, expr hclsyntax.Expression) []string {
	t.Helper()
	obj, ok := expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatalf("%s: not an object", expr.Range())
	}
	var keys []string
	for _, item := range obj.Items {
		keys = append(keys, hcl.ExprAsKeyword(item.KeyExpr))
	}
	slices.Sort(keys)
	return keys
}

// TestRelayModuleRefusesASecondStore: with the database, a store block in
// config_dir, or a file named like the one the module writes, stops the
// plan instead of instances that do not start.
func TestRelayModuleRefusesASecondStore(t *testing.T) {
	lt := findBlock(t, moduleBlocks(t, relayModule), "resource", "aws_launch_template", "relay")
	var conditions []hclsyntax.Expression
	for _, lc := range nestedBlocks(lt, "lifecycle") {
		for _, pre := range nestedBlocks(lc, "precondition") {
			conditions = append(conditions, attr(t, pre, "condition"))
		}
	}
	if len(conditions) < 2 {
		t.Fatalf("the launch template has %d preconditions, want the two on config_dir", len(conditions))
	}
	holds := func(configDir string, database cty.Value) bool {
		ctx := moduleContext(t, relayModule, map[string]cty.Value{"config_dir": cty.StringVal(configDir), "database": database}, nil)
		for _, c := range conditions {
			if !evalIn(t, c, ctx).True() {
				return false
			}
		}
		return true
	}
	example := filepath.Join(root, exampleDir, "config")
	withStore := filepath.Dir(testutil.WriteFile(t, t.TempDir(), "10-relay.hcl", "server {}\n\n  store {\n  path = \"/var/lib/oauthrelay\"\n}\n"))
	clash := filepath.Dir(testutil.WriteFile(t, t.TempDir(), "90-store-postgres.hcl", "# mine\n"))
	noDatabase := cty.NullVal(exampleStore.Type())
	for _, tc := range []struct {
		dir      string
		database cty.Value
		want     bool
	}{
		{example, exampleStore, true},
		{withStore, noDatabase, true},
		{withStore, exampleStore, false},
		{clash, exampleStore, false},
	} {
		if got := holds(tc.dir, tc.database); got != tc.want {
			t.Errorf("config_dir %s, database %v: preconditions hold = %v, want %v", tc.dir, !tc.database.IsNull(), got, tc.want)
		}
	}
}
