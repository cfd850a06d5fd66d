package seal_test

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/seal"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestCheckTransit: the check passes with the README's policy and tells
// an operator what to do in every other case.
func TestCheckTransit(t *testing.T) {
	vs := transitVault(t)
	revoked := vs.PolicyToken("relay", relayPolicy)
	if err := vs.Client.Auth().Token().RevokeTree(revoked); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		"root":         testutil.VaultRootToken,
		"relay":        vs.PolicyToken("relay", relayPolicy),
		"datakey-only": vs.PolicyToken("datakey-only", `path "transit/datakey/plaintext/oauthrelay-queue" { capabilities = ["update"] }`),
		"decrypt-only": vs.PolicyToken("decrypt-only", `path "transit/decrypt/oauthrelay-queue" { capabilities = ["update"] }`),
		"revoked":      revoked,
	}
	both := `must grant "update" on transit/datakey/plaintext/oauthrelay-queue and transit/decrypt/oauthrelay-queue`
	tests := []struct {
		name, token, mount, key string
		want                    []string // nil: passes
	}{
		{"root token", "root", "transit", keyName, nil},
		{"the README's policy", "relay", "/transit/", keyName, nil},
		{"missing key", "root", "transit", "absent", []string{
			"transit datakey: transit key \"absent\" not found at mount \"transit\": create it with `vault write -f transit/keys/absent`"}},
		{"missing mount", "root", "kms", keyName, []string{
			`transit datakey: no Transit secrets engine at mount "kms"`, "enable it with `vault secrets enable -path=kms transit`"}},
		{"no datakey permission", "decrypt-only", "transit", keyName, []string{
			`transit datakey (mount "transit", key "oauthrelay-queue"): permission denied (HTTP 403 from Vault: permission denied)`, both}},
		{"no decrypt permission", "datakey-only", "transit", keyName, []string{
			`transit decrypt (mount "transit", key "oauthrelay-queue"): permission denied (HTTP 403 from Vault: permission denied)`, both}},
		{"revoked token", "revoked", "transit", keyName, []string{"permission denied", "its token must be valid"}},
		{"empty key name", "root", "transit", "", []string{`invalid Transit key name ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vc := newCounter().client(t, vs, tokens[tt.token])
			err := seal.CheckTransit(t.Context(), vc, tt.mount, tt.key)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			assertClean(t, err, []string{tokens[tt.token]})
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
		})
	}
}

// TestCheckTransitChangesNothing: a check against a missing key does not
// create it (an operator decides its type and settings).
func TestCheckTransitChangesNothing(t *testing.T) {
	vs := transitVault(t)
	if err := seal.CheckTransit(t.Context(), vs.Client, "transit", "absent"); err == nil {
		t.Fatal("the check passed without the key")
	}
	s, err := vs.Client.Logical().Read("transit/keys/absent")
	if err != nil || s != nil {
		t.Fatalf("reading the key after the check: %v, %v; want it absent", s, err)
	}
}
