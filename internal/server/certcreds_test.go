package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	frank          = "frank@example.com" // client_credentials with a certificate
	entraClient    = "entra-app"
	entraClientID  = "relay-entra"
	entraVaultPath = "oauthrelay/entra"
)

// TestClientCertificateInVault sends as an account whose application
// authenticates with a certificate kept in Vault, rotates the certificate
// in Vault (the provider knowing only the new one from then on), and keeps
// sending without a restart: picked up by the poll, or at once when the
// provider refuses the old certificate (the relay re-reads Vault).
func TestClientCertificateInVault(t *testing.T) {
	for _, tc := range []struct {
		name string
		poll string
		// refuseOldFirst removes the old certificate from the application
		// before the relay could notice the new one in Vault, and revokes
		// the issued tokens, so that the next message meets invalid_client.
		refuseOldFirst bool
	}{
		{name: "poll", poll: "500ms"},
		{name: "recheck on invalid_client", poll: "1h", refuseOldFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := testutil.StartVault(t)
			ca, err := devsandbox.NewCA() // Entra does not check who issued the certificate
			if err != nil {
				t.Fatal(err)
			}
			old, fresh := issueAppCert(t, ca, "relay 2025"), issueAppCert(t, ca, "relay 2026")
			vs.Put(entraVaultPath, map[string]any{"cert": old.CertPEM, "key": old.KeyPEM})
			h := newHarness(t, harnessOptions{vault: vs, pollInterval: tc.poll, extraConfig: entraGroup(t)})
			h.secrets = append(h.secrets, keyLines(old.KeyPEM)...)
			h.secrets = append(h.secrets, keyLines(fresh.KeyPEM)...)
			h.secrets = append(h.secrets, "eyJhbGciOiJSUzI1NiI") // the start of every client assertion
			h.sb.Tokens.AddClientCertificate(entraClientID, old.Certificate)

			h.mustSend(entraClient, frank)
			if got := h.sb.Tokens.GrantsWith(devsandbox.CertificateThumbprint(old.Certificate)); got != 1 {
				t.Fatalf("tokens issued for the first certificate = %d, want 1", got)
			}
			l := h.startLoadAs(entraClient, frank)
			testutil.WaitFor(t, 10*time.Second, "messages before the rotation", func() bool { return l.count() >= 5 })

			// The operator uploads the new certificate to the application,
			// stores it in Vault, then removes the old one.
			h.sb.Tokens.AddClientCertificate(entraClientID, fresh.Certificate)
			if tc.refuseOldFirst {
				h.sb.Tokens.RemoveClientCertificate(entraClientID, old.Certificate)
				vs.Put(entraVaultPath, map[string]any{"cert": fresh.CertPEM, "key": fresh.KeyPEM})
				h.sb.Tokens.RevokeAccessTokens()
			} else {
				vs.Put(entraVaultPath, map[string]any{"cert": fresh.CertPEM, "key": fresh.KeyPEM})
			}
			freshThumb := devsandbox.CertificateThumbprint(fresh.Certificate)
			testutil.WaitFor(t, 10*time.Second, "a token obtained with the new certificate", func() bool { return h.sb.Tokens.GrantsWith(freshThumb) > 0 })
			h.sb.Tokens.RemoveClientCertificate(entraClientID, old.Certificate)
			before := l.count()
			testutil.WaitFor(t, 10*time.Second, "messages after the rotation", func() bool { return l.count() >= before+5 })

			sent, errs := l.stop()
			for _, err := range errs {
				t.Errorf("message failed: %v", err)
			}
			if got := len(h.sb.SMTP.Messages()); got != sent+1 {
				t.Errorf("provider holds %d messages, clients got %d × 250", got, sent+1)
			}
			if !strings.Contains(h.logs.String(), "secret rotated in Vault") {
				t.Error("the rotation is not logged")
			}
			if tc.refuseOldFirst && !strings.Contains(h.logs.String(), "their source has newer ones") {
				t.Error("the refusal did not make the relay re-read Vault")
			}
		})
	}
}

func issueAppCert(t *testing.T, ca *devsandbox.CA, name string) *devsandbox.AppCertificate {
	t.Helper()
	c, err := ca.IssueAppCertificate(devsandbox.AppCertificateOptions{CommonName: name})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keyLines are the base64 lines of a PEM key, each enough to reveal a leak.
func keyLines(p string) []string {
	lines := strings.Split(strings.TrimSpace(p), "\n")
	return lines[1 : len(lines)-1]
}

// entraGroup is an app-only group of the sandbox provider whose
// certificate and key are in Vault.
func entraGroup(t *testing.T) string {
	return fmt.Sprintf(`
account_group "entra" {
  provider           = "sandbox"
  flow               = "client_credentials"
  client_id          = %q
  client_certificate = "vault://secret/%s#cert"
  client_private_key = "vault://secret/%s#key"
  account %q {}
  client %q { password_hash = %q }
}
`, entraClientID, entraVaultPath, entraVaultPath, frank, entraClient, testutil.FastHash(t, "pw-"+t.Name()))
}

// startLoadAs sends messages one after another as client until stopped.
func (h *harness) startLoadAs(client, from string) *load {
	l := &load{stopCh: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stopCh:
				return
			default:
			}
			_, err := h.send(client, from)
			l.mu.Lock()
			if err != nil {
				l.errs = append(l.errs, err)
			} else {
				l.sent++
			}
			l.mu.Unlock()
		}
	}()
	h.t.Cleanup(func() { l.stop() })
	return l
}
