package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
)

// TestExamples validates every configuration under examples/. Paths under
// /etc/oauthrelay are moved into a temporary directory that holds a real
// certificate, so the examples are checked exactly as `oauthrelay validate`
// would check them on a provisioned host.
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
			p := filepath.Join(root, filepath.Base(path))
			if err := os.WriteFile(p, []byte(moved), 0o600); err != nil {
				t.Fatal(err)
			}
			loaded := config.Load(p, config.Overrides{})
			for _, d := range loaded.Diagnostics {
				t.Errorf("%s", config.FormatDiagnostic(d))
			}
		})
	}
}
