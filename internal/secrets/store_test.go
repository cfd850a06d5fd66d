package secrets_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
)

func ref(t *testing.T, s string) config.SecretRef {
	t.Helper()
	r, err := config.ParseSecretRef(s, hcl.Range{Filename: "relay.hcl", Start: hcl.Pos{Line: 3, Column: 5}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rt")
	if err := os.WriteFile(path, []byte("file-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"RT": "env-value"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	refs := []config.SecretRef{ref(t, "literal-value"), ref(t, "env://RT"), ref(t, "file://"+path)}
	st, err := secrets.Load(context.Background(), refs, secrets.WithEnv(lookup))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"literal-value", "env-value", "file-value"} {
		got, err := st.Getter(refs[i])()
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", refs[i], got, err, want)
		}
	}
	var notified []config.SecretRef
	st.Subscribe(func(c []config.SecretRef) { notified = append(notified, c...) })
	if st.Refresh(context.Background(), refs[2]) {
		t.Error("Refresh reported a change of an unchanged file")
	}
	if err := os.WriteFile(path, []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !st.Refresh(context.Background(), refs[2]) || len(notified) != 1 {
		t.Errorf("Refresh missed the file change (notified %v)", notified)
	}
	if got, _ := st.Get(refs[2]); got != "rotated" {
		t.Errorf("after Refresh: %q", got)
	}
}

func TestUnresolvableReferencesNameThePlaceNotTheValue(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	refs := []config.SecretRef{
		ref(t, "env://MISSING_VAR"),
		ref(t, "file://"+filepath.Join(dir, "absent")),
		ref(t, "file://"+empty),
		ref(t, "vault://secret/app#client_secret"),
	}
	_, err := secrets.Load(context.Background(), refs, secrets.WithEnv(func(string) (string, bool) { return "", false }))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"relay.hcl:3:5", "MISSING_VAR is not set", "absent", "is empty", "no Vault client"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestSecretRefNeverPrintsLiteral(t *testing.T) {
	r := ref(t, "super-secret-literal")
	for _, s := range []string{r.String(), r.GoString(), fmtAll(r)} {
		if strings.Contains(s, "super-secret") {
			t.Errorf("printed the literal: %s", s)
		}
	}
}
