package iac

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"go.yaml.in/yaml/v3"
)

// moduleBlocks parses the .tf and .pkr.hcl files of one directory (relative
// to the repository root) and returns their top-level blocks.
func moduleBlocks(t *testing.T, dir string) hclsyntax.Blocks {
	t.Helper()
	var all hclsyntax.Blocks
	for _, pattern := range []string{"*.tf", "*.pkr.hcl"} {
		files, _ := filepath.Glob(filepath.Join(root, dir, pattern))
		for _, f := range files {
			all = append(all, parseHCL(t, f).Blocks...)
		}
	}
	if len(all) == 0 {
		t.Fatalf("no HCL in %s", dir)
	}
	return all
}

func parseHCL(t *testing.T, path string) *hclsyntax.Body {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return file.Body.(*hclsyntax.Body)
}

// findBlock returns the one block of type typ whose labels start with
// labels, failing the test when there is none.
func findBlock(t *testing.T, blocks hclsyntax.Blocks, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	if b := lookupBlock(blocks, typ, labels...); b != nil {
		return b
	}
	t.Fatalf("no %s %q block", typ, labels)
	return nil
}

func lookupBlock(blocks hclsyntax.Blocks, typ string, labels ...string) *hclsyntax.Block {
	for _, b := range blocks {
		if b.Type == typ && len(b.Labels) >= len(labels) && equalStrings(b.Labels[:len(labels)], labels) {
			return b
		}
	}
	return nil
}

// localExpr returns the expression of a module's local, failing when the
// module has no such local.
func localExpr(t *testing.T, blocks hclsyntax.Blocks, name string) hclsyntax.Expression {
	t.Helper()
	for _, b := range blocks {
		if a, ok := b.Body.Attributes[name]; ok && b.Type == "locals" {
			return a.Expr
		}
	}
	t.Fatalf("no local %q", name)
	return nil
}

func nestedBlocks(b *hclsyntax.Block, typ string) hclsyntax.Blocks {
	var out hclsyntax.Blocks
	for _, n := range b.Body.Blocks {
		if n.Type == typ {
			out = append(out, n)
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// attr returns a block's attribute expression, failing when it is missing.
func attr(t *testing.T, b *hclsyntax.Block, name string) hclsyntax.Expression {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %q has no %s (%s)", b.Type, b.Labels, name, b.Range())
	}
	return a.Expr
}

// constant evaluates an expression that must not depend on anything.
func constant(t *testing.T, expr hclsyntax.Expression) cty.Value {
	t.Helper()
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s: not a constant: %v", expr.Range(), diags)
	}
	return v
}

// references lists what an expression refers to, as "var.x", "local.y",
// "aws_lb.smtp" (resource type and name), "build.User" …
func references(expr hclsyntax.Expression) []string {
	var out []string
	for _, tr := range expr.Variables() {
		name := tr.RootName()
		if len(tr) > 1 {
			if a, ok := tr[1].(hcl.TraverseAttr); ok {
				name += "." + a.Name
			}
		}
		out = append(out, name)
	}
	return out
}

func refersTo(expr hclsyntax.Expression, ref string) bool {
	for _, r := range references(expr) {
		if r == ref {
			return true
		}
	}
	return false
}

// renderTemplate evaluates an HCL template file (Terraform's templatefile,
// Packer's templatefile) with vars and the functions Terraform and Packer
// define.
func renderTemplate(t *testing.T, path string, vars map[string]cty.Value) string {
	t.Helper()
	out, diags := templateValue(path, vars, terraformFunctions())
	if diags.HasErrors() {
		t.Fatalf("rendering %s: %v", path, diags)
	}
	return out
}

var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

// cloudConfig parses rendered cloud-init user data.
func cloudConfig(t *testing.T, userData string) map[string]any {
	t.Helper()
	if !strings.HasPrefix(userData, "#cloud-config\n") {
		t.Fatalf("user data does not start with #cloud-config:\n%s", userData)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(userData), &doc); err != nil {
		t.Fatalf("user data is not YAML: %v\n%s", err, userData)
	}
	return doc
}

// yamlKeys lists every mapping key anywhere in a parsed YAML document.
func yamlKeys(node any) []string {
	var keys []string
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			keys = append(keys, k)
			keys = append(keys, yamlKeys(v)...)
		}
	case []any:
		for _, v := range n {
			keys = append(keys, yamlKeys(v)...)
		}
	}
	return keys
}
