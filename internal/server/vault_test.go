package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestVaultRotationUnderLoad rotates a secret in Vault while mail flows,
// with 5-second access tokens, and makes the provider refuse the old value
// at once: no message may fail, and the new value must be in use within
// the poll interval.
func TestVaultRotationUnderLoad(t *testing.T) {
	for _, kind := range []string{"refresh_token", "client_secret"} {
		t.Run(kind, func(t *testing.T) {
			vs := testutil.StartVault(t)
			const poll = time.Second
			h := newHarness(t, harnessOptions{vault: vs, pollInterval: "1s", tokenTTL: 5 * time.Second, telemetry: true})
			l := h.startLoad(3, alice)
			testutil.WaitFor(t, 10*time.Second, "the first messages", func() bool { return l.count() >= 10 })

			var fresh string
			rotated := time.Now()
			switch kind {
			case "refresh_token":
				fresh = h.sb.Tokens.IssueRefreshToken(delegatedClientID, alice, config.GoogleScope)
				vs.Put("oauthrelay/rt-"+alice, map[string]any{"value": fresh})
				h.sb.Tokens.RevokeRefreshToken(h.rts[alice])
			case "client_secret":
				fresh = "cs-rotated-" + t.Name()
				h.sb.Tokens.AddClient(delegatedClientID, fresh) // the old secret stops working now
				vs.Put("oauthrelay/cs-delegated", map[string]any{"value": fresh})
			}
			h.secrets = append(h.secrets, fresh)
			testutil.WaitFor(t, 10*time.Second, "a token obtained with the new "+kind, func() bool { return h.sb.Tokens.GrantsWith(fresh) > 0 })
			if took := time.Since(rotated); took > poll+time.Second {
				t.Errorf("the new %s was first used %s after the rotation; want within the poll interval (%s)", kind, took, poll)
			}
			// Keep sending past a whole token lifetime on the new value.
			before := l.count()
			testutil.WaitFor(t, 20*time.Second, "messages over a token lifetime", func() bool {
				return time.Since(rotated) > 6*time.Second && l.count() > before+20
			})
			sent, errs := l.stop()
			for _, err := range errs {
				t.Errorf("message failed: %v", err)
			}
			if got := len(h.sb.SMTP.Messages()); got != sent {
				t.Errorf("provider holds %d messages, clients got %d × 250", got, sent)
			}
			if v := h.metric(`oauthrelay_secret_rotations_total{source="vault"}`); v < 1 {
				t.Errorf("rotation metric = %v", v)
			}
			if !strings.Contains(h.logs.String(), "secret rotated in Vault") {
				t.Error("the rotation is not logged")
			}
		})
	}
}

// TestVaultOutage kills Vault mid-run: relaying continues on the values it
// has; when Vault is back, rotations are picked up again.
func TestVaultOutage(t *testing.T) {
	vs := testutil.StartVault(t)
	// A connection per message, so that refreshes keep happening.
	h := newHarness(t, harnessOptions{vault: vs, pollInterval: "300ms", tokenTTL: 3 * time.Second, telemetry: true, providerExtra: "max_messages_per_connection = 1"})
	l := h.startLoad(2, alice)
	testutil.WaitFor(t, 10*time.Second, "the first messages", func() bool { return l.count() >= 5 })
	if v := h.metric("oauthrelay_vault_up"); v != 1 {
		t.Errorf("oauthrelay_vault_up = %v before the outage", v)
	}

	vs.Stop()
	requests := h.sb.Tokens.Requests(alice)
	// Past a token lifetime without Vault: refreshes must use the cached
	// refresh token.
	testutil.WaitFor(t, 15*time.Second, "token refreshes during the outage", func() bool { return h.sb.Tokens.Requests(alice) >= requests+2 })
	testutil.WaitFor(t, 5*time.Second, "oauthrelay_vault_up to drop", func() bool { return h.metric("oauthrelay_vault_up") == 0 })

	// A rebuilt Vault: the operator restores the secrets, then rotates.
	vs.Restart()
	for name, value := range map[string]string{"rt-" + bob: h.rts[bob], "cs-delegated": "cs-delegated-" + t.Name(), "cs-app-only": "cs-app-only-" + t.Name()} {
		vs.Put("oauthrelay/"+name, map[string]any{"value": value})
	}
	vs.Put("oauthrelay/rt-"+alice, map[string]any{"value": h.rts[alice]})
	fresh := h.sb.Tokens.IssueRefreshToken(delegatedClientID, alice, config.GoogleScope)
	h.secrets = append(h.secrets, fresh)
	vs.Put("oauthrelay/rt-"+alice, map[string]any{"value": fresh})
	h.sb.Tokens.RevokeRefreshToken(h.rts[alice])
	testutil.WaitFor(t, 15*time.Second, "the new refresh token after the outage", func() bool { return h.sb.Tokens.GrantsWith(fresh) > 0 })
	testutil.WaitFor(t, 5*time.Second, "oauthrelay_vault_up to recover", func() bool { return h.metric("oauthrelay_vault_up") == 1 })

	sent, errs := l.stop()
	for _, err := range errs {
		t.Errorf("message failed: %v", err)
	}
	if got := len(h.sb.SMTP.Messages()); got != sent {
		t.Errorf("provider holds %d messages, clients got %d × 250", got, sent)
	}
}

// TestVaultAppRoleRenewalWhileRelaying uses an AppRole token that lives 4s
// (12s at most): it is renewed, then replaced by a fresh login, and mail
// keeps flowing throughout.
func TestVaultAppRoleRenewalWhileRelaying(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.PutPolicy("oauthrelay", `
path "secret/data/oauthrelay/*"     { capabilities = ["read", "update"] }
path "secret/metadata/oauthrelay/*" { capabilities = ["read"] }
`)
	roleID, secretID := vs.EnableAppRole("relay", "oauthrelay", 4*time.Second, 12*time.Second)
	dir := t.TempDir()
	roleFile := testutil.WriteFile(t, dir, "role-id", roleID)
	secretFile := testutil.WriteFile(t, dir, "secret-id", secretID)
	auth := fmt.Sprintf(`auth "approle" {
    role_id   = "file://%s"
    secret_id = "file://%s"
  }`, roleFile, secretFile)
	h := newHarness(t, harnessOptions{vault: vs, vaultAuth: auth, pollInterval: "500ms", tokenTTL: 3 * time.Second, telemetry: true})
	h.secrets = append(h.secrets, secretID)
	l := h.startLoad(2, alice)
	testutil.WaitFor(t, 40*time.Second, "a renewal and a second login", func() bool {
		return h.metric("oauthrelay_vault_token_renewals_total") >= 1 &&
			h.metric(`oauthrelay_vault_logins_total{result="success"}`) >= 2
	})
	// Rotation still works with the new Vault token.
	fresh := h.sb.Tokens.IssueRefreshToken(delegatedClientID, alice, config.GoogleScope)
	h.secrets = append(h.secrets, fresh)
	vs.Put("oauthrelay/rt-"+alice, map[string]any{"value": fresh})
	testutil.WaitFor(t, 10*time.Second, "the rotated refresh token", func() bool { return h.sb.Tokens.GrantsWith(fresh) > 0 })
	sent, errs := l.stop()
	for _, err := range errs {
		t.Errorf("message failed: %v", err)
	}
	if sent == 0 {
		t.Error("nothing was sent")
	}
}

// TestVaultWriteBackOfRotatedRefreshToken has the provider rotate refresh
// tokens (as Microsoft does): the relay stores each new one in Vault, so a
// restarted relay starts from a token the provider still accepts.
func TestVaultWriteBackOfRotatedRefreshToken(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.Put("oauthrelay/untouched", map[string]any{"value": "x"})
	h := newHarness(t, harnessOptions{vault: vs})
	h.sb.Tokens.SetRotateRefreshTokens(true)
	h.mustSend(appClient, alice)

	var stored string
	testutil.WaitFor(t, 10*time.Second, "the rotated refresh token in Vault", func() bool {
		s, err := vs.Client.KVv2("secret").Get(context.Background(), "oauthrelay/rt-"+alice)
		if err != nil {
			return false
		}
		stored, _ = s.Data["value"].(string)
		return stored != h.rts[alice] && s.VersionMetadata.Version == 2
	})
	h.secrets = append(h.secrets, stored)
	if h.sb.Tokens.RefreshTokenValid(h.rts[alice]) || !h.sb.Tokens.RefreshTokenValid(stored) {
		t.Fatal("Vault does not hold the refresh token the provider now accepts")
	}

	h.stop()
	h.start()
	h.mustSend(appClient, alice)
	if n := len(h.sb.SMTP.Messages()); n != 2 {
		t.Errorf("provider holds %d messages, want 2", n)
	}
	if !strings.Contains(h.logs.String(), "stored the rotated refresh token in Vault") {
		t.Error("the write-back is not logged")
	}
}

func TestVaultMissingSecretFailsStartup(t *testing.T) {
	vs := testutil.StartVault(t)
	dir := t.TempDir()
	path := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
vault {
  address = %q
  auth "token" { token = %q }
}
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "google" { preset = "google" }
account_group "g" {
  provider  = "google"
  client_id = "id"
  account "a@example.com" { refresh_token = "vault://secret/oauthrelay/missing#refresh_token" }
}
`, vs.Addr, testutil.VaultRootToken))
	loaded := config.Load(path, config.Overrides{ClientsOptional: true})
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	_, err := newRuntime(loaded.Config)
	if err == nil || !strings.Contains(err.Error(), "vault://secret/oauthrelay/missing") || !strings.Contains(err.Error(), "relay.hcl:14:") {
		t.Fatalf("err = %v, want one naming the path and its place", err)
	}
}

func TestVaultWriteBackCanBeTurnedOff(t *testing.T) {
	vs := testutil.StartVault(t)
	h := newHarness(t, harnessOptions{vault: vs, delegatedExtra: "write_back = false"})
	h.sb.Tokens.SetRotateRefreshTokens(true)
	h.mustSend(appClient, alice)
	h.sb.Tokens.RevokeAccessTokens() // force a second refresh, with the rotated token
	h.mustSend(appClient, alice)
	s, err := vs.Client.KVv2("secret").Get(context.Background(), "oauthrelay/rt-"+alice)
	if err != nil {
		t.Fatal(err)
	}
	if s.VersionMetadata.Version != 1 || s.Data["value"] != h.rts[alice] {
		t.Errorf("write_back = false, yet Vault holds version %d", s.VersionMetadata.Version)
	}
}

// TestVaultRotatedSecretIsRedacted rotates a secret in Vault under a relay
// whose logging has the redaction net, then logs the new value by
// accident, in both log formats: it must come out as [REDACTED].
func TestVaultRotatedSecretIsRedacted(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			vs := testutil.StartVault(t)
			h := newHarness(t, harnessOptions{vault: vs, pollInterval: "200ms"})
			h.stop() // the harness's relay logs without the net; run one that has it
			out := &testutil.LogBuffer{}
			logging := telemetry.NewLogging(out, "debug", format)
			loaded := config.Load(h.cfgPath, config.Overrides{})
			if loaded.Diagnostics.HasErrors() {
				t.Fatal(loaded.Diagnostics)
			}
			rt, err := newRuntimeWithLogging(loaded.Config, logging)
			if err != nil {
				t.Fatal(err)
			}
			if err := rt.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = rt.Shutdown(ctx)
			})

			fresh := `cs-rotated&<"\` + t.Name()
			vs.Put("oauthrelay/cs-delegated", map[string]any{"value": fresh})
			testutil.WaitFor(t, 10*time.Second, "the rotation to be picked up", func() bool {
				return strings.Contains(out.String(), "secret rotated in Vault")
			})
			log := logging.Logger().Named("accident")
			log.Error("a library quoted a request body", "body", "client_secret="+fresh, "error", fmt.Errorf("refused: %s", fresh))
			text := out.String()
			testutil.AssertNoSecrets(t, "logs", text, append([]string{fresh, "cs-rotated"}, h.secrets...))
			if n := strings.Count(text, "[REDACTED]"); n < 2 {
				t.Errorf("%d redactions in the log, want at least 2 (the accidental line's body and error)", n)
			}
		})
	}
}
