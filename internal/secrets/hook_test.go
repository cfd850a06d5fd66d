package secrets_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// hookRecorder collects what a value hook was told, like the redactor.
type hookRecorder struct {
	mu     sync.Mutex
	byKey  map[string]string
	values map[string]bool
}

func newHookRecorder() *hookRecorder {
	return &hookRecorder{byKey: map[string]string{}, values: map[string]bool{}}
}

func (h *hookRecorder) set(key, value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byKey[key] = value
	h.values[value] = true
}

func (h *hookRecorder) has(value string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.values[value]
}

func (h *hookRecorder) current(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byKey[key]
}

// TestValueHookLearnsEveryValue checks that the hook hears of each value
// the store takes: loaded, rotated in Vault, changed in a file, written
// back to Vault or a file — and of the Vault client's token.
func TestValueHookLearnsEveryValue(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "vault-rt-first", "client_secret": "vault-cs-first"})
	v := newVault(t, vaultConfig(vs.Addr, config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)}), &testutil.LogBuffer{})
	dir := t.TempDir()
	rtFile := filepath.Join(dir, "rt")
	if err := os.WriteFile(rtFile, []byte("file-rt-first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vaultRT := vref(t, "vault://secret/oauthrelay/acct#refresh_token")
	vaultCS := vref(t, "vault://secret/oauthrelay/acct#client_secret")
	fileRT := ref(t, "file://"+rtFile)

	rec := newHookRecorder()
	st, err := secrets.Load(context.Background(), []config.SecretRef{vaultRT, vaultCS, fileRT},
		secrets.WithVault(v, 100*time.Millisecond), secrets.WithValueHook(rec.set))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vault-rt-first", "vault-cs-first", "file-rt-first"} {
		if !rec.has(want) {
			t.Errorf("the hook did not hear of the loaded value %q", want)
		}
	}

	// A store loaded without the option learns the hook later, with
	// what it holds, and the Vault client's token.
	late := newHookRecorder()
	st.OnValue(late.set)
	for _, want := range []string{"vault-rt-first", "vault-cs-first", "file-rt-first", testutil.VaultRootToken} {
		if !late.has(want) {
			t.Errorf("OnValue did not replay %q", want[:4])
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); st.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	vs.Put("oauthrelay/acct", map[string]any{"refresh_token": "vault-rt-rotated", "client_secret": "vault-cs-first"})
	testutil.WaitFor(t, 10*time.Second, "the rotated Vault value reaching the hook", func() bool { return rec.has("vault-rt-rotated") })
	if got := rec.current("secret:" + vaultRT.String() + " (previous)"); got != "vault-rt-first" {
		t.Errorf("the replaced value is not kept under the previous key (got %d chars)", len(got))
	}

	if err := os.WriteFile(rtFile, []byte("file-rt-changed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st.Refresh(context.Background(), fileRT)
	if !rec.has("file-rt-changed") {
		t.Error("the hook did not hear of the changed file")
	}

	if err := st.WriteBack(context.Background(), vaultRT, "vault-rt-written-back"); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteBack(context.Background(), fileRT, "file-rt-written-back"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vault-rt-written-back", "file-rt-written-back"} {
		if !rec.has(want) || !late.has(want) {
			t.Errorf("a hook did not hear of the written-back value %q", want)
		}
	}
}
