package iac

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	vault "github.com/hashicorp/vault/api"
	"github.com/zclconf/go-cty/cty"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// exampleRelayConfig is the relay HCL the example's instances run.
func exampleRelayConfig(t *testing.T) hclsyntax.Blocks {
	t.Helper()
	return parseHCL(t, filepath.Join(root, exampleDir, "config/10-relay.hcl")).Blocks
}

// exampleVaultArg is a constant argument the example gives module "vault",
// or else that variable's default in the module.
func exampleVaultArg(t *testing.T, name string) string {
	t.Helper()
	if a, ok := findBlock(t, moduleBlocks(t, exampleDir), "module", "vault").Body.Attributes[name]; ok {
		return constant(t, a.Expr).AsString()
	}
	return constant(t, attr(t, findBlock(t, moduleBlocks(t, vaultModule), "variable", name), "default")).AsString()
}

// vaultModuleContext evaluates the vault module's expressions as the
// example calls it, without the database unless extraVars says so.
func vaultModuleContext(t *testing.T, extraVars map[string]cty.Value) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{
		"secrets_path":              cty.StringVal(exampleVaultArg(t, "secrets_path")),
		"kv_mount":                  cty.StringVal(exampleVaultArg(t, "kv_mount")),
		"database_credentials_path": cty.NullVal(cty.String),
	}
	for k, v := range extraVars {
		vars[k] = v
	}
	return moduleContext(t, vaultModule, vars, nil)
}

func evalString(t *testing.T, expr hclsyntax.Expression, ctx *hcl.EvalContext) string {
	t.Helper()
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return v.AsString()
}

func TestExampleRelayConfigMatchesTheModules(t *testing.T) {
	config := exampleRelayConfig(t)
	listener := findBlock(t, config, "listener", "submission")
	for _, file := range []string{"tls_cert_file", "tls_key_file"} {
		if _, ok := listener.Body.Attributes[file]; ok {
			t.Errorf("the listener reads %s: the certificate and key come from Vault", file)
		}
	}
	refs := attr(t, findBlock(t, moduleBlocks(t, vaultModule), "output", "tls_secret_refs"), "value")
	want, diags := refs.Value(vaultModuleContext(t, nil))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for attrName, field := range map[string]string{"tls_cert": "cert", "tls_key": "key"} {
		if got := constant(t, attr(t, listener, attrName)).AsString(); got != want.GetAttr(field).AsString() {
			t.Errorf("listener %s = %q, want %q (modules/vault's TLS secret)", attrName, got, want.GetAttr(field).AsString())
		}
	}

	vaultBlock := findBlock(t, config, "vault")
	auths := nestedBlocks(vaultBlock, "auth")
	if len(auths) != 1 || auths[0].Labels[0] != "aws" {
		t.Fatalf("the example's vault block must log in with auth \"aws\" only, has %d auth blocks", len(auths))
	}
	example := moduleBlocks(t, exampleDir)
	exampleDefault := func(name string) string {
		return constant(t, attr(t, findBlock(t, example, "variable", name), "default")).AsString()
	}
	vaultArgs := findBlock(t, example, "module", "vault")
	if !refersTo(attr(t, vaultArgs, "iam_server_id_header_value"), "var.vault_iam_server_id") ||
		!refersTo(attr(t, vaultArgs, "sts_region"), "var.aws_region") {
		t.Fatal("the example's Vault module does not take the header value and STS region from its variables")
	}
	for name, want := range map[string]string{
		"role":         exampleVaultArg(t, "role_name"),
		"mount_path":   exampleVaultArg(t, "aws_auth_path"),
		"header_value": exampleDefault("vault_iam_server_id"),
		"region":       exampleDefault("aws_region"),
	} {
		if got := constant(t, attr(t, auths[0], name)).AsString(); got != want {
			t.Errorf("auth \"aws\" %s = %q, want %q as the Terraform example sets up", name, got, want)
		}
	}
}

// TestVaultPolicyServesTheTLSSecret loads the vault module's policy and TLS
// secret into a real Vault and reads the example's references with a token
// of that policy, as a relay instance would after its IAM login.
func TestVaultPolicyServesTheTLSSecret(t *testing.T) {
	const cert, key = "-----BEGIN CERTIFICATE-----\ncert\n", "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n"
	blocks := moduleBlocks(t, vaultModule)
	ctx := vaultModuleContext(t, map[string]cty.Value{"tls_cert_pem": cty.StringVal(cert), "tls_key_pem": cty.StringVal(key)})
	policy := evalString(t, attr(t, findBlock(t, blocks, "resource", "vault_policy", "relay"), "policy"), ctx)
	tls := findBlock(t, blocks, "resource", "vault_kv_secret_v2", "tls")
	mount, name := evalString(t, attr(t, tls, "mount"), ctx), evalString(t, attr(t, tls, "name"), ctx)
	var data map[string]any
	if err := json.Unmarshal([]byte(evalString(t, attr(t, tls, "data_json"), ctx)), &data); err != nil {
		t.Fatal(err)
	}

	v := testutil.StartVault(t)
	v.PutPolicy("oauthrelay", policy)
	if _, err := v.Client.KVv2(mount).Put(context.Background(), name, data); err != nil {
		t.Fatalf("writing the TLS secret as the module does: %v", err)
	}
	v.Put("elsewhere/tls", map[string]any{"key": "someone else's"})
	relay := tokenClient(t, v, "oauthrelay")

	listener := findBlock(t, exampleRelayConfig(t), "listener", "submission")
	for attrName, want := range map[string]string{"tls_cert": cert, "tls_key": key} {
		ref := constant(t, attr(t, listener, attrName)).AsString()
		refMount, path, field := splitVaultRef(t, ref)
		s, err := relay.KVv2(refMount).Get(context.Background(), path)
		if err != nil {
			t.Errorf("%s (%s): the relay cannot read it: %v", attrName, ref, err)
			continue
		}
		if got, _ := s.Data[field].(string); got != want {
			t.Errorf("%s (%s): field %q does not hold what the module wrote", attrName, ref, field)
		}
		// Rotation without restart polls the secret's metadata.
		if _, err := relay.KVv2(refMount).GetMetadata(context.Background(), path); err != nil {
			t.Errorf("%s: the relay cannot read the metadata it polls for rotations: %v", attrName, err)
		}
	}

	for _, tc := range []struct {
		what    string
		do      func() error
		allowed bool
	}{
		{"overwrite the TLS secret", func() error {
			_, err := relay.KVv2(mount).Put(context.Background(), name, map[string]any{"cert": "x"})
			return err
		}, false},
		{"write back a rotated refresh token", func() error {
			_, err := relay.KVv2(mount).Put(context.Background(), "oauthrelay/accounts/a", map[string]any{"refresh_token": "r"})
			return err
		}, true},
		{"read outside its path", func() error {
			_, err := relay.KVv2("secret").Get(context.Background(), "elsewhere/tls")
			return err
		}, false},
	} {
		err := tc.do()
		var resp *vault.ResponseError
		denied := errors.As(err, &resp) && resp.StatusCode == http.StatusForbidden
		if tc.allowed && err != nil || !tc.allowed && !denied {
			t.Errorf("%s: allowed=%v, got %v", tc.what, tc.allowed, err)
		}
	}
}

// tokenClient returns a client with a fresh token of policy alone: not
// Vault's default policy, which grants some rights (sys/leases/renew) on its
// own.
func tokenClient(t *testing.T, v *testutil.VaultServer, policy string) *vault.Client {
	t.Helper()
	secret, err := v.Client.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{policy}, NoParent: true, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(secret.Auth.ClientToken)
	return c
}

// splitVaultRef splits vault://mount/path#field (README, "Secrets in Vault").
func splitVaultRef(t *testing.T, ref string) (mount, path, field string) {
	t.Helper()
	rest, ok := strings.CutPrefix(ref, "vault://")
	location, field, hasField := strings.Cut(rest, "#")
	mount, path, hasPath := strings.Cut(location, "/")
	if !ok || !hasField || !hasPath {
		t.Fatalf("%q is not vault://mount/path#field", ref)
	}
	return mount, path, field
}
