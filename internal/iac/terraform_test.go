package iac

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

const relayModule = "terraform/modules/relay"

func TestHealthPortOpenToTheLoadBalancerAlways(t *testing.T) {
	blocks := moduleBlocks(t, relayModule)
	sg := findBlock(t, blocks, "resource", "aws_security_group", "relay")

	// A plain ingress block (not a dynamic one, which monitoring_cidrs may
	// switch off) for the health port from the load balancer's subnets.
	var rule *hclsyntax.Block
	for _, in := range nestedBlocks(sg, "ingress") {
		if refersTo(attr(t, in, "from_port"), "var.health_port") {
			rule = in
		}
	}
	if rule == nil {
		t.Fatal("no unconditional ingress rule for var.health_port")
	}
	if !refersTo(attr(t, rule, "to_port"), "var.health_port") {
		t.Error("the health rule's to_port is not var.health_port")
	}
	cidrs := attr(t, rule, "cidr_blocks")
	if refersTo(cidrs, "var.monitoring_cidrs") || !refersTo(cidrs, "data.aws_subnet") {
		t.Errorf("%s: the health rule must allow the load balancer's subnets (data.aws_subnet), not monitoring_cidrs: %v", cidrs.Range(), references(cidrs))
	}
	tg := findBlock(t, blocks, "resource", "aws_lb_target_group", "smtp")
	healthCheck := nestedBlocks(tg, "health_check")
	if len(healthCheck) != 1 || !refersTo(attr(t, healthCheck[0], "port"), "var.health_port") {
		t.Error("the target group's health check does not use var.health_port")
	}
	lbSubnets := references(attr(t, findBlock(t, blocks, "resource", "aws_lb", "smtp"), "subnets"))
	subnetData := references(attr(t, findBlock(t, blocks, "data", "aws_subnet", "lb"), "for_each"))
	if !slices.Equal(lbSubnets, subnetData) {
		t.Errorf("the health rule's subnets (%v) are not the load balancer's (%v)", subnetData, lbSubnets)
	}
}

const (
	vaultModule = "terraform/modules/vault"
	exampleDir  = "terraform/examples/aws"
)

func TestRelayInstancesRollOneByOne(t *testing.T) {
	blocks := moduleBlocks(t, relayModule)
	for _, gone := range []string{"aws_instance", "aws_lb_target_group_attachment"} {
		if b := lookupBlock(blocks, "resource", gone); b != nil {
			t.Errorf("%s: a fixed %s: a change replaces every instance at once", b.Range(), gone)
		}
	}
	asg := findBlock(t, blocks, "resource", "aws_autoscaling_group", "relay")
	lt := nestedBlocks(asg, "launch_template")
	if len(lt) != 1 || !refersTo(attr(t, lt[0], "version"), "aws_launch_template.relay") {
		t.Fatal("the group does not follow the launch template's versions")
	}
	if got := constant(t, attr(t, asg, "health_check_type")).AsString(); got != "ELB" {
		t.Errorf("health_check_type = %q, want ELB (the load balancer's /health/ready)", got)
	}
	if !refersTo(attr(t, asg, "target_group_arns"), "aws_lb_target_group.smtp") {
		t.Error("the group does not register its instances with the load balancer's target group")
	}

	refresh := nestedBlocks(asg, "instance_refresh")
	if len(refresh) != 1 {
		t.Fatal("no instance_refresh block")
	}
	if got := constant(t, attr(t, refresh[0], "strategy")).AsString(); got != "Rolling" {
		t.Errorf("instance_refresh strategy = %q, want Rolling", got)
	}
	prefs := nestedBlocks(refresh[0], "preferences")
	if len(prefs) != 1 {
		t.Fatal("instance_refresh has no preferences")
	}
	// Defaults: never below full capacity, new instances first.
	for _, tc := range []struct {
		attr, variable string
		min, max       int64
	}{
		{"min_healthy_percentage", "refresh_min_healthy_percentage", 100, 100},
		{"max_healthy_percentage", "refresh_max_healthy_percentage", 101, 200},
	} {
		if !refersTo(attr(t, prefs[0], tc.attr), "var."+tc.variable) {
			t.Errorf("preferences.%s is not var.%s", tc.attr, tc.variable)
			continue
		}
		def, _ := constant(t, attr(t, findBlock(t, blocks, "variable", tc.variable), "default")).AsBigFloat().Int64()
		if def < tc.min || def > tc.max {
			t.Errorf("var.%s defaults to %d, want %d..%d", tc.variable, def, tc.min, tc.max)
		}
	}
	if !refersTo(attr(t, asg, "max_size"), "local.max_instances") ||
		!refersTo(localExpr(t, blocks, "max_instances"), "var.refresh_max_healthy_percentage") {
		t.Error("max_size leaves no room for the instances a refresh starts first")
	}
}

// Names of inputs that would put a secret into user data, which anyone who
// can read the instance's metadata or describe it in EC2 can read.
var secretNames = []string{"tls_key", "tls_cert", "private_key", "secret_id", "role_id", "token", "password"}

func TestRelayUserDataCarriesNoSecret(t *testing.T) {
	blocks := moduleBlocks(t, relayModule)
	for _, b := range blocks {
		if b.Type == "variable" && containsAny(b.Labels[0], secretNames) {
			t.Errorf("variable %q: the relay module takes no secret (Vault delivers them)", b.Labels[0])
		}
	}
	lt := findBlock(t, blocks, "resource", "aws_launch_template", "relay")
	call := templatefileCall(t, attr(t, lt, "user_data"))
	vars, ok := call.Args[1].(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatalf("%s: the template's variables are not an object", call.Args[1].Range())
	}
	for _, item := range vars.Items {
		if name := constant(t, item.KeyExpr).AsString(); name != "config_files" {
			t.Errorf("%s: the user data template is given %q; it takes the configuration files only", item.KeyExpr.Range(), name)
		}
	}

	template := filepath.Join(root, relayModule, "cloud-init.yaml.tftpl")
	src, _ := os.ReadFile(template)
	if containsAny(string(src), secretNames) {
		t.Errorf("%s mentions a secret input", template)
	}
	const config = "server {\n  log_format = \"json\"\n}\n"
	doc := cloudConfig(t, renderTemplate(t, template, map[string]cty.Value{
		"config_files": cty.MapVal(map[string]cty.Value{"10-relay.hcl": cty.StringVal(config)}),
	}))
	files, _ := doc["write_files"].([]any)
	if len(files) != 1 {
		t.Fatalf("write_files = %v, want the one configuration file", doc["write_files"])
	}
	file := files[0].(map[string]any)
	content, err := base64.StdEncoding.DecodeString(file["content"].(string))
	if file["path"] != "/etc/oauthrelay/10-relay.hcl" || err != nil || string(content) != config {
		t.Errorf("write_files[0] = %v, want /etc/oauthrelay/10-relay.hcl with the file's content", file)
	}
}

// templatefileCall finds templatefile(path, vars) in an expression such as
// base64encode(templatefile(…)).
func templatefileCall(t *testing.T, expr hclsyntax.Expression) *hclsyntax.FunctionCallExpr {
	t.Helper()
	for call, ok := expr.(*hclsyntax.FunctionCallExpr); ok; call, ok = call.Args[0].(*hclsyntax.FunctionCallExpr) {
		if call.Name == "templatefile" && len(call.Args) == 2 {
			return call
		}
		if len(call.Args) != 1 {
			break
		}
	}
	t.Fatalf("%s: not templatefile(path, vars)", expr.Range())
	return nil
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

func TestRelayInstancesLogInToVaultWithTheirIAMRole(t *testing.T) {
	relay := moduleBlocks(t, relayModule)
	profile := nestedBlocks(findBlock(t, relay, "resource", "aws_launch_template", "relay"), "iam_instance_profile")
	if len(profile) != 1 || !refersTo(attr(t, profile[0], "arn"), "aws_iam_instance_profile.relay") {
		t.Fatal("the launch template gives the instances no instance profile")
	}
	if !refersTo(attr(t, findBlock(t, relay, "resource", "aws_iam_instance_profile", "relay"), "role"), "aws_iam_role.relay") {
		t.Error("the instance profile does not carry aws_iam_role.relay")
	}
	if !refersTo(attr(t, findBlock(t, relay, "output", "iam_role_arn"), "value"), "aws_iam_role.relay") {
		t.Error("the module does not output the role's ARN for Vault")
	}

	vault := moduleBlocks(t, vaultModule)
	if got := constant(t, attr(t, findBlock(t, vault, "resource", "vault_auth_backend", "aws"), "type")).AsString(); got != "aws" {
		t.Errorf("vault_auth_backend.aws has type %q", got)
	}
	client := findBlock(t, vault, "resource", "vault_aws_auth_backend_client", "relay")
	if !refersTo(attr(t, client, "iam_server_id_header_value"), "var.iam_server_id_header_value") {
		t.Error("the AWS auth client does not set iam_server_id_header_value")
	}
	role := findBlock(t, vault, "resource", "vault_aws_auth_backend_role", "relay")
	if got := constant(t, attr(t, role, "auth_type")).AsString(); got != "iam" {
		t.Errorf("auth_type = %q, want iam", got)
	}
	for name, want := range map[string]string{
		"bound_iam_principal_arns": "var.relay_iam_role_arns",
		"token_policies":           "vault_policy.relay",
		"token_ttl":                "var.token_ttl",
		"token_max_ttl":            "var.token_max_ttl",
		"role":                     "var.role_name",
	} {
		if !refersTo(attr(t, role, name), want) {
			t.Errorf("vault_aws_auth_backend_role.%s is not %s", name, want)
		}
	}
	for _, ttl := range []string{"token_ttl", "token_max_ttl"} {
		if d, _ := constant(t, attr(t, findBlock(t, vault, "variable", ttl), "default")).AsBigFloat().Int64(); d > 3600 {
			t.Errorf("var.%s defaults to %ds: relay tokens should be short-lived", ttl, d)
		}
	}

	example := moduleBlocks(t, exampleDir)
	if !refersTo(attr(t, findBlock(t, example, "module", "vault"), "relay_iam_role_arns"), "module.relay") {
		t.Error("the example does not bind the Vault role to the relay's IAM role")
	}
}
