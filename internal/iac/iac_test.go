package iac

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

const root = "../.."

// iacFiles returns the Terraform and Packer files, by directory (module).
func iacFiles(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, top := range []string{"terraform", "packer"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(p, ".tf") || strings.HasSuffix(p, ".pkr.hcl")) {
				out[filepath.Dir(p)] = append(out[filepath.Dir(p)], p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 4 {
		t.Fatalf("expected the packer template and three terraform modules, found %v", out)
	}
	return out
}

func TestParseFormatAndReferences(t *testing.T) {
	for dir, files := range iacFiles(t) {
		t.Run(strings.TrimPrefix(dir, root+"/"), func(t *testing.T) {
			p := hclparse.NewParser()
			declared := map[string]map[string]bool{"var": {}, "local": {}, "module": {}}
			type ref struct {
				kind, name string
				rng        hcl.Range
			}
			var refs []ref
			for _, f := range files {
				src, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				file, diags := p.ParseHCL(src, f)
				if diags.HasErrors() {
					t.Errorf("%s does not parse: %v", f, diags)
					continue
				}
				if formatted := hclwrite.Format(src); !bytes.Equal(formatted, src) {
					t.Errorf("%s is not formatted (terraform fmt / packer fmt would change it)", f)
				}
				body := file.Body.(*hclsyntax.Body)
				for _, b := range body.Blocks {
					switch b.Type {
					case "variable":
						declared["var"][b.Labels[0]] = true
					case "module":
						declared["module"][b.Labels[0]] = true
					case "locals":
						for name := range b.Body.Attributes {
							declared["local"][name] = true
						}
					}
				}
				hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
					expr, ok := n.(hclsyntax.Expression)
					if !ok {
						return nil
					}
					for _, tr := range expr.Variables() {
						kind := tr.RootName()
						if _, tracked := declared[kind]; !tracked || len(tr) < 2 {
							continue
						}
						if attr, ok := tr[1].(hcl.TraverseAttr); ok {
							refs = append(refs, ref{kind, attr.Name, tr.SourceRange()})
						}
					}
					return nil
				})
			}
			var missing []string
			for _, r := range refs {
				if !declared[r.kind][r.name] {
					missing = append(missing, r.rng.String()+": "+r.kind+"."+r.name)
				}
			}
			sort.Strings(missing)
			for _, m := range missing {
				t.Errorf("undeclared reference %s", m)
			}
		})
	}
}

func TestModuleInputsAreDeclared(t *testing.T) {
	// Every argument the example passes to a module is a variable of it.
	p := hclparse.NewParser()
	example := filepath.Join(root, "terraform/examples/aws/main.tf")
	file, diags := p.ParseHCLFile(example)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "module" {
			continue
		}
		src, _ := b.Body.Attributes["source"].Expr.Value(nil)
		modDir := filepath.Join(filepath.Dir(example), src.AsString())
		vars := map[string]bool{}
		for _, f := range mustGlob(t, filepath.Join(modDir, "*.tf")) {
			mf, d := p.ParseHCLFile(f)
			if d.HasErrors() {
				t.Fatal(d)
			}
			for _, vb := range mf.Body.(*hclsyntax.Body).Blocks {
				if vb.Type == "variable" {
					vars[vb.Labels[0]] = true
				}
			}
		}
		for name := range b.Body.Attributes {
			if !moduleMetaArguments[name] && !vars[name] {
				t.Errorf("module %q is given %q, which %s does not declare", b.Labels[0], name, modDir)
			}
		}
	}
}

// moduleMetaArguments are the arguments of a module block that Terraform
// takes for itself.
var moduleMetaArguments = map[string]bool{"source": true, "version": true, "count": true, "for_each": true, "providers": true, "depends_on": true}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no files for %s", pattern)
	}
	return m
}

func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(root, "packer/files/oauthrelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecReload=/bin/kill -HUP $MAINPID",
		"NoNewPrivileges=true",
		"ProtectSystem=strict",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"Restart=on-failure",
		"User=oauthrelay",
	} {
		if !bytes.Contains(unit, []byte(want+"\n")) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: static checks only")
		return
	}
	// verify wants the ExecStart binary to exist: point it at one that does.
	self, _ := os.Executable()
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "oauthrelay.service")
	if err := os.WriteFile(copyPath, bytes.ReplaceAll(unit, []byte("/usr/local/bin/oauthrelay"), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
