package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
)

// TestExamples checks every configuration under examples/ (and the
// Terraform example's) twice: `validate` must pass on a fresh clone, where
// no file the examples name exists, and CheckHost must pass on a
// provisioned host, simulated by moving /etc/oauthrelay into a temporary
// directory that holds a real certificate, and /var/lib/oauthrelay (the
// store, which CheckHost creates) into a temporary directory.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*/*.hcl")
	tfConfigs, _ := filepath.Glob("../../terraform/examples/*/config/*.hcl")
	files = append(files, tfConfigs...)
	if err != nil || len(files) < 7 {
		t.Fatalf("examples not found: %v %v", files, err)
	}
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range files {
		t.Run(strings.TrimPrefix(path, "../../"), func(t *testing.T) {
			loaded := config.Load(path, config.Overrides{})
			for _, d := range loaded.Diagnostics {
				t.Errorf("validate: %s", config.FormatDiagnostic(d))
			}
			if loaded.Config == nil {
				t.Fatal("validate returned no configuration")
			}
			moved := provisioned(t, ca, path)
			for _, d := range config.CheckHost(moved) {
				t.Errorf("host check: %s", config.FormatDiagnostic(d))
			}
		})
	}
}

// provisioned loads a copy of the example whose /etc/oauthrelay/ paths
// point into a temporary directory holding a certificate and key, and whose
// /var/lib/oauthrelay into one that does not exist yet.
func provisioned(t *testing.T, ca *devsandbox.CA, path string) *config.Config {
	t.Helper()
	root := t.TempDir()
	etc := filepath.Join(root, "etc", "oauthrelay")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(filepath.Join(etc, "tls.crt"), filepath.Join(etc, "tls.key"), "relay.example.com"); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.ReplaceAll(string(src), "/etc/oauthrelay/", etc+"/")
	moved = strings.ReplaceAll(moved, "/var/lib/oauthrelay", filepath.Join(root, "var", "lib", "oauthrelay"))
	p := filepath.Join(root, filepath.Base(path))
	if err := os.WriteFile(p, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded := config.Load(p, config.Overrides{})
	if loaded.Config == nil {
		t.Fatalf("moved copy does not load: %v", loaded.Diagnostics)
	}
	return loaded.Config
}
