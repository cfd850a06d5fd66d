package server_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
)

// Verification: a reload that raises or lowers min_tls_version applies to
// the next connection, on STARTTLS and implicit listeners alike.
func TestReviewMinTLSVersionFollowsReload(t *testing.T) {
	certFile, keyFile, pool := rsaCertificate(t)
	tls10 := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS10}
	for _, mode := range []string{"starttls", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, harnessOptions{listenerTLS: mode, listenerCert: [2]string{certFile, keyFile}, listenerExtra: `min_tls_version = "1.0"` + "\n  max_connections_per_ip = 0"})
			if _, err := handshake(t, h.addr, mode, pool, tls10); err != nil {
				t.Fatalf("TLS 1.0 on a 1.0 listener: %v", err)
			}
			h.rewrite(strings.Replace(h.cfgText, `min_tls_version = "1.0"`, `min_tls_version = "1.2"`, 1))
			if err := h.rt.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st, err := handshake(t, h.addr, mode, pool, tls10); err == nil {
				t.Fatalf("TLS 1.0 accepted after a reload to 1.2: %s", tls.CipherSuiteName(st.CipherSuite))
			}
			h.rewrite(strings.Replace(h.cfgText, `min_tls_version = "1.2"`, `min_tls_version = "1.0"`, 1))
			if err := h.rt.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := handshake(t, h.addr, mode, pool, tls10); err != nil {
				t.Fatalf("TLS 1.0 after a reload back to 1.0: %v", err)
			}
		})
	}
}
