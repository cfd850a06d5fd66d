package iac

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

const databaseModule = "terraform/modules/database"

func TestDatabaseIsPrivateEncryptedAndDurable(t *testing.T) {
	blocks := moduleBlocks(t, databaseModule)
	db := findBlock(t, blocks, "resource", "aws_db_instance", "relay")
	for name, want := range map[string]cty.Value{
		"engine":              cty.StringVal("postgres"),
		"publicly_accessible": cty.False,
		"storage_encrypted":   cty.True,
		// The last backup is taken even by a destroy that was allowed.
		"skip_final_snapshot": cty.False,
	} {
		if got := constant(t, attr(t, db, name)); !got.RawEquals(want) {
			t.Errorf("aws_db_instance.%s = %#v, want %#v", name, got, want)
		}
	}
	defaults := varDefaults(t, blocks)
	for name, tc := range map[string]struct {
		variable string
		ok       func(cty.Value) bool
	}{
		"kms_key_id":              {"kms_key_arn", func(cty.Value) bool { return true }},
		"multi_az":                {"multi_az", func(cty.Value) bool { return true }},
		"deletion_protection":     {"deletion_protection", cty.Value.True},
		"backup_retention_period": {"backup_retention_days", func(v cty.Value) bool { return v.GreaterThanOrEqualTo(cty.NumberIntVal(7)).True() }},
		"engine_version":          {"engine_version", func(v cty.Value) bool { return regexp.MustCompile(`^1[6-9](\.\d+)?$`).MatchString(v.AsString()) }},
	} {
		if !refersTo(attr(t, db, name), "var."+tc.variable) {
			t.Errorf("aws_db_instance.%s is not var.%s", name, tc.variable)
		} else if !tc.ok(defaults[tc.variable]) {
			t.Errorf("var.%s defaults to %#v", tc.variable, defaults[tc.variable])
		}
	}
	if !refersTo(attr(t, findBlock(t, blocks, "resource", "aws_db_subnet_group", "relay"), "subnet_ids"), "var.subnet_ids") ||
		!refersTo(attr(t, db, "db_subnet_group_name"), "aws_db_subnet_group.relay") {
		t.Error("the database is not in var.subnet_ids (the private subnets)")
	}
	if got := references(attr(t, db, "vpc_security_group_ids")); !slices.Equal(got, []string{"aws_security_group.database"}) {
		t.Errorf("vpc_security_group_ids refers to %v, want the module's own group only", got)
	}
	if _, ok := db.Body.Attributes["manage_master_user_password"]; ok {
		t.Error("manage_master_user_password: RDS would rotate the password Vault logs in with behind its back")
	}
	if !refersTo(attr(t, db, "password"), "random_password.master") {
		t.Error("the master password is not the module's generated one")
	}
}

func TestDatabaseRefusesConnectionsWithoutTLS(t *testing.T) {
	blocks := moduleBlocks(t, databaseModule)
	db := findBlock(t, blocks, "resource", "aws_db_instance", "relay")
	if !refersTo(attr(t, db, "parameter_group_name"), "aws_db_parameter_group.relay") {
		t.Fatal("the instance does not use the module's parameter group")
	}
	params := map[string]string{}
	for _, p := range nestedBlocks(findBlock(t, blocks, "resource", "aws_db_parameter_group", "relay"), "parameter") {
		params[constant(t, attr(t, p, "name")).AsString()] = constant(t, attr(t, p, "value")).AsString()
	}
	for name, want := range map[string]string{"rds.force_ssl": "1", "ssl_min_protocol_version": "TLSv1.2", "password_encryption": "scram-sha-256"} {
		if params[name] != want {
			t.Errorf("parameter %s = %q, want %q", name, params[name], want)
		}
	}

	conn := nestedBlocks(findBlock(t, blocks, "resource", "vault_database_secret_backend_connection", "relay"), "postgresql")
	if len(conn) != 1 {
		t.Fatal("the Vault connection has no postgresql block")
	}
	ctx := moduleContext(t, databaseModule, nil, rdsStandIn("db.example.internal", 5432, "oauthrelay", "vault_root"))
	url := evalIn(t, attr(t, conn[0], "connection_url"), ctx).AsString()
	if want := "@db.example.internal:5432/oauthrelay?sslmode=verify-full"; !strings.HasSuffix(url, want) {
		t.Errorf("Vault's connection_url %q does not end with %q", url, want)
	}
	if !refersTo(attr(t, conn[0], "tls_ca"), "var.ca_bundle_pem") {
		t.Error("Vault's connection does not verify the server with var.ca_bundle_pem")
	}
}

func TestDatabaseAdmitsOnlyTheRelaysAndVault(t *testing.T) {
	blocks := moduleBlocks(t, databaseModule)
	for _, typ := range []string{"aws_security_group_rule", "aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"} {
		if b := lookupBlock(blocks, "resource", typ); b != nil {
			t.Errorf("%s: a rule outside the group's own blocks", b.Range())
		}
	}
	sg := findBlock(t, blocks, "resource", "aws_security_group", "database")
	// Omitted, egress is left as AWS or anyone else makes it; [] removes it.
	if got := constant(t, attr(t, sg, "egress")); !got.RawEquals(cty.EmptyTupleVal) {
		t.Errorf("the database's group has egress %#v, want [] (none, managed)", got)
	}
	ctx := moduleContext(t, databaseModule, nil, nil)
	var sources []string
	for _, b := range sg.Body.Blocks {
		if b.Type != "ingress" {
			t.Errorf("%s: a %s block in the database's group (no egress, no dynamic rules)", b.Range(), b.Type)
			continue
		}
		for _, name := range []string{"from_port", "to_port"} {
			if got := evalIn(t, attr(t, b, name), ctx); !got.RawEquals(cty.NumberIntVal(5432)) {
				t.Errorf("%s: %s = %#v, want 5432", b.Range(), name, got)
			}
		}
		if got := constant(t, attr(t, b, "protocol")).AsString(); got != "tcp" {
			t.Errorf("%s: protocol %q", b.Range(), got)
		}
		for name := range b.Body.Attributes {
			switch name {
			case "cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids", "self":
				t.Errorf("%s: ingress by %s: only the relays' and Vault's groups may connect", b.Range(), name)
			}
		}
		sources = append(sources, references(attr(t, b, "security_groups"))...)
	}
	slices.Sort(sources)
	if want := []string{"var.relay_security_group_id", "var.vault_security_group_ids"}; !slices.Equal(sources, want) {
		t.Errorf("the database admits %v, want %v", sources, want)
	}
	if !refersTo(attr(t, findBlock(t, blocks, "resource", "aws_db_instance", "relay"), "port"), "local.port") {
		t.Error("the instance's port is not the one its security group opens")
	}
}

// TestNoSecretInOutputs: the master password (and the Vault connection's
// copy of it) appears in no output of the database module or the example.
func TestNoSecretInOutputs(t *testing.T) {
	for _, dir := range []string{databaseModule, exampleDir} {
		for _, b := range moduleBlocks(t, dir) {
			if b.Type != "output" {
				continue
			}
			for _, tr := range fullTraversals(attr(t, b, "value")) {
				if strings.HasPrefix(tr, "random_password.") || strings.Contains(tr, "password") || strings.Contains(tr, "master_user_secret") {
					t.Errorf("%s: output %q refers to %s", dir, b.Labels[0], tr)
				}
			}
		}
	}
}

// fullTraversals lists the references of an expression with all their
// attribute steps: "aws_db_instance.relay.password".
func fullTraversals(expr hclsyntax.Expression) []string {
	var out []string
	for _, tr := range expr.Variables() {
		parts := []string{tr.RootName()}
		for _, step := range tr[1:] {
			if a, ok := step.(hcl.TraverseAttr); ok {
				parts = append(parts, a.Name)
			}
		}
		out = append(out, strings.Join(parts, "."))
	}
	return out
}

func TestExampleDatabaseIsOptional(t *testing.T) {
	example := moduleBlocks(t, exampleDir)
	if def := varDefaults(t, example)["database_enabled"]; !def.RawEquals(cty.False) {
		t.Errorf("var.database_enabled defaults to %#v, want false", def)
	}
	database := findBlock(t, example, "module", "database")
	vault, relay := findBlock(t, example, "module", "vault"), findBlock(t, example, "module", "relay")
	for enabled, instances := range map[bool]cty.Value{
		false: cty.EmptyTupleVal,
		true: cty.TupleVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
			"relay_store":            cty.StringVal("store"),
			"vault_credentials_path": cty.StringVal("creds"),
		})}),
	} {
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{
				"var":    cty.ObjectVal(map[string]cty.Value{"database_enabled": cty.BoolVal(enabled)}),
				"module": cty.ObjectVal(map[string]cty.Value{"database": instances}),
			},
			Functions: terraformFunctions(),
		}
		if got := evalIn(t, attr(t, database, "count"), ctx); !got.RawEquals(cty.NumberIntVal(int64(instances.LengthInt()))) {
			t.Errorf("database_enabled = %v: module database count = %#v", enabled, got)
		}
		for _, arg := range []struct {
			module *hclsyntax.Block
			name   string
			want   cty.Value
		}{
			{relay, "database", cty.StringVal("store")},
			{vault, "database_credentials_path", cty.StringVal("creds")},
		} {
			got := evalIn(t, attr(t, arg.module, arg.name), ctx)
			if enabled && !got.RawEquals(arg.want) || !enabled && !got.IsNull() {
				t.Errorf("database_enabled = %v: module %s gets %s = %#v", enabled, arg.module.Labels[0], arg.name, got)
			}
		}
	}
	if !refersTo(attr(t, database, "relay_security_group_id"), "module.relay") {
		t.Error("the example's database does not admit the relay's security group")
	}
}

// rdsStandIn stands for the module's RDS instance in an evaluation context.
func rdsStandIn(address string, port int, name, user string) map[string]cty.Value {
	return map[string]cty.Value{"aws_db_instance": cty.ObjectVal(map[string]cty.Value{
		"relay": cty.ObjectVal(map[string]cty.Value{
			"address":  cty.StringVal(address),
			"port":     cty.NumberIntVal(int64(port)),
			"db_name":  cty.StringVal(name),
			"username": cty.StringVal(user),
		}),
	})}
}

// TestRelayPolicyHasDatabaseRightsOnlyWithTheDatabase: modules/vault's
// policy gains exactly the credentials path and lease renewal and
// revocation when database_credentials_path is set, and nothing otherwise.
func TestRelayPolicyHasDatabaseRightsOnlyWithTheDatabase(t *testing.T) {
	without := policyRules(t, relayPolicyFor(t, cty.NullVal(cty.String)))
	with := policyRules(t, relayPolicyFor(t, cty.StringVal("database/creds/oauthrelay")))
	added := map[string]string{}
	for path, caps := range with {
		if prev, ok := without[path]; !ok {
			added[path] = caps
		} else if prev != caps {
			t.Errorf("path %q: %s with the database, %s without", path, caps, prev)
		}
	}
	want := map[string]string{
		"database/creds/oauthrelay": `["read"]`,
		"sys/leases/renew":          `["update"]`,
		"sys/leases/revoke":         `["update"]`,
	}
	if len(without) != len(with)-len(added) || !maps.Equal(added, want) {
		t.Errorf("the database adds %v to the policy (and keeps %d of %d paths), want %v", added, len(with)-len(added), len(without), want)
	}
}

func relayPolicyFor(t *testing.T, credentialsPath cty.Value) string {
	t.Helper()
	ctx := vaultModuleContext(t, map[string]cty.Value{"database_credentials_path": credentialsPath})
	return evalString(t, attr(t, findBlock(t, moduleBlocks(t, vaultModule), "resource", "vault_policy", "relay"), "policy"), ctx)
}

// policyRules parses a Vault policy (HCL): path → its capabilities as JSON.
func policyRules(t *testing.T, policy string) map[string]string {
	t.Helper()
	file, diags := hclsyntax.ParseConfig([]byte(policy), "policy.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("the policy does not parse: %v\n%s", diags, policy)
	}
	rules := map[string]string{}
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "path" || len(b.Labels) != 1 {
			t.Fatalf("%s: not a path block", b.Range())
		}
		caps, err := ctyjson.Marshal(constant(t, attr(t, b, "capabilities")), cty.List(cty.String))
		if err != nil {
			t.Fatal(err)
		}
		rules[b.Labels[0]] = string(caps)
	}
	return rules
}
