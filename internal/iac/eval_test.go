package iac

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// moduleContext evaluates a module's expressions as Terraform would for a
// call that sets vars (the other variables keep their defaults): with
// path.module, the functions the modules use, and extra top-level names
// standing for resources ("aws_db_instance" → {relay = {address = …}}).
// The module's locals are evaluated into it too, those that can be.
func moduleContext(t *testing.T, dir string, vars, resources map[string]cty.Value) *hcl.EvalContext {
	t.Helper()
	blocks := moduleBlocks(t, dir)
	values := varDefaults(t, blocks)
	for k, v := range vars {
		values[k] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  cty.ObjectVal(values),
			"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(filepath.Join(root, dir))}),
		},
		Functions: terraformFunctions(),
	}
	for k, v := range resources {
		ctx.Variables[k] = v
	}
	evalLocals(blocks, ctx)
	return ctx
}

// varDefaults returns the defaults of a module's variables; variables
// without one are left out.
func varDefaults(t *testing.T, blocks hclsyntax.Blocks) map[string]cty.Value {
	t.Helper()
	out := map[string]cty.Value{}
	for _, b := range blocks {
		if a, ok := b.Body.Attributes["default"]; ok && b.Type == "variable" {
			out[b.Labels[0]] = constant(t, a.Expr)
		}
	}
	return out
}

// evalLocals puts into ctx every local whose expression evaluates, in
// dependency order; one that refers to something ctx lacks is left out.
func evalLocals(blocks hclsyntax.Blocks, ctx *hcl.EvalContext) {
	pending := map[string]hclsyntax.Expression{}
	for _, b := range blocks {
		if b.Type == "locals" {
			for name, a := range b.Body.Attributes {
				pending[name] = a.Expr
			}
		}
	}
	locals := map[string]cty.Value{}
	for progress := true; progress; {
		progress = false
		for _, name := range slices.Sorted(maps.Keys(pending)) {
			ctx.Variables["local"] = cty.ObjectVal(locals)
			v, diags := pending[name].Value(ctx)
			if diags.HasErrors() || !v.IsWhollyKnown() {
				continue
			}
			locals[name] = v
			delete(pending, name)
			progress = true
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
}

// evalIn evaluates an expression that must evaluate in ctx.
func evalIn(t *testing.T, expr hclsyntax.Expression, ctx *hcl.EvalContext) cty.Value {
	t.Helper()
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", expr.Range(), diags)
	}
	return v
}

// terraformFunctions are the Terraform functions the modules and their
// templates call, as Terraform defines them.
func terraformFunctions() map[string]function.Function {
	funcs := map[string]function.Function{
		"alltrue":      allTrueFunc,
		"base64encode": base64EncodeFunc,
		"can":          tryfunc.CanFunc,
		"ceil":         stdlib.CeilFunc,
		"contains":     stdlib.ContainsFunc,
		"file":         fileFunc,
		"fileset":      filesetFunc,
		"jsonencode":   stdlib.JSONEncodeFunc,
		"keys":         stdlib.KeysFunc,
		"merge":        stdlib.MergeFunc,
		"one":          oneFunc,
		"regex":        stdlib.RegexFunc,
		"trimspace":    stdlib.TrimSpaceFunc,
		"values":       stdlib.ValuesFunc,
	}
	funcs["templatefile"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			out, diags := templateValue(args[0].AsString(), args[1].AsValueMap(), funcs)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			return cty.StringVal(out), nil
		},
	})
	return funcs
}

// templateValue renders an HCL template file with vars.
func templateValue(path string, vars map[string]cty.Value, funcs map[string]function.Function) (string, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", hcl.Diagnostics{{Severity: hcl.DiagError, Summary: err.Error()}}
	}
	expr, diags := hclsyntax.ParseTemplate(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return "", diags
	}
	v, diags := expr.Value(&hcl.EvalContext{Variables: vars, Functions: funcs})
	if diags.HasErrors() {
		return "", diags
	}
	return v.AsString(), nil
}

var fileFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := os.ReadFile(args[0].AsString())
		return cty.StringVal(string(b)), err
	},
})

// filesetFunc is fileset(path, pattern) for the single-directory patterns
// the modules use: the matching names relative to path.
var filesetFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "pattern", Type: cty.String}},
	Type:   function.StaticReturnType(cty.Set(cty.String)),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		matches, err := filepath.Glob(filepath.Join(args[0].AsString(), args[1].AsString()))
		if err != nil || len(matches) == 0 {
			return cty.SetValEmpty(cty.String), err
		}
		names := make([]cty.Value, len(matches))
		for i, m := range matches {
			names[i] = cty.StringVal(filepath.Base(m))
		}
		return cty.SetVal(names), nil
	},
})

// oneFunc is one(list): null for an empty list, else its only element.
var oneFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.DynamicPseudoType}},
	Type:   function.StaticReturnType(cty.DynamicPseudoType),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		switch n := args[0].LengthInt(); n {
		case 0:
			return cty.NullVal(cty.DynamicPseudoType), nil
		case 1:
			return args[0].Index(cty.NumberIntVal(0)), nil
		default:
			return cty.NilVal, function.NewArgErrorf(0, "must have no more than one element, has %d", n)
		}
	},
})

var allTrueFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
	Type:   function.StaticReturnType(cty.Bool),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		for it := args[0].ElementIterator(); it.Next(); {
			if _, v := it.Element(); !v.True() {
				return cty.False, nil
			}
		}
		return cty.True, nil
	},
})
