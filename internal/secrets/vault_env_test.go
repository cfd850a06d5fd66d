package secrets_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// tlsVault is a real Vault dev server behind a TLS-terminating proxy on
// loopback, recording what reaches it.
type tlsVault struct {
	vault  *testutil.VaultServer
	addr   string // https://127.0.0.1:port
	caFile string // the proxy's certificate, PEM
	caDir  string

	mu          sync.Mutex
	clientCerts int
	headers     []http.Header
}

func startTLSVault(t *testing.T) *tlsVault {
	t.Helper()
	vs := testutil.StartVault(t)
	target, err := url.Parse(vs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tv := &tlsVault{vault: vs}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tv.mu.Lock()
		tv.clientCerts += len(r.TLS.PeerCertificates)
		tv.headers = append(tv.headers, r.Header.Clone())
		tv.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tv.addr = srv.URL
	tv.caDir = t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	tv.caFile = testutil.WriteFile(t, tv.caDir, "ca.pem", string(certPEM))
	return tv
}

// clientCertFiles writes a self-signed client certificate and its key.
func clientCertFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "env-client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = testutil.WriteFile(t, dir, "client.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = testutil.WriteFile(t, dir, "client.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// TestVaultClientIgnoresVaultEnvironment sets the VAULT_* variables the
// Vault library reads by default: none may change the relay's client.
// Without ca_file, Vault's certificate must stay unverifiable whatever the
// environment says; with it, the environment must not break or alter the
// connection.
func TestVaultClientIgnoresVaultEnvironment(t *testing.T) {
	tv := startTLSVault(t)
	certFile, keyFile := clientCertFiles(t)
	tests := []struct {
		name   string
		env    map[string]string
		caFile bool
	}{
		{name: "VAULT_SKIP_VERIFY", env: map[string]string{"VAULT_SKIP_VERIFY": "1"}},
		{name: "VAULT_CACERT", env: map[string]string{"VAULT_CACERT": tv.caFile}},
		{name: "VAULT_CAPATH", env: map[string]string{"VAULT_CAPATH": tv.caDir}},
		{name: "VAULT_AGENT_ADDR", env: map[string]string{"VAULT_AGENT_ADDR": tv.vault.Addr}},
		{name: "VAULT_ADDR", env: map[string]string{"VAULT_ADDR": tv.vault.Addr}},
		{name: "VAULT_TLS_SERVER_NAME", env: map[string]string{"VAULT_TLS_SERVER_NAME": "wrong.example.net"}, caFile: true},
		{name: "VAULT_CLIENT_CERT", env: map[string]string{"VAULT_CLIENT_CERT": certFile, "VAULT_CLIENT_KEY": keyFile}, caFile: true},
		{name: "VAULT_NAMESPACE and VAULT_HEADERS", env: map[string]string{"VAULT_NAMESPACE": "env-ns", "VAULT_HEADERS": `{"X-Env-Header": "1"}`}, caFile: true},
		{name: "VAULT_TOKEN", env: map[string]string{"VAULT_TOKEN": testutil.VaultRootToken}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := vaultConfig(tv.addr, config.VaultAuth{Method: "token", Token: config.NewLiteralSecret(testutil.VaultRootToken)})
			if tc.caFile {
				cfg.CAFile = tv.caFile
			}
			tv.mu.Lock()
			tv.clientCerts, tv.headers = 0, nil
			tv.mu.Unlock()
			v, err := secrets.NewVault(cfg, secrets.ResolveLocal, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Login(context.Background())
			if !tc.caFile {
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("login = %v; want a certificate verification error (Vault's CA is not configured)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("login with ca_file: %v", err)
			}
			tv.mu.Lock()
			defer tv.mu.Unlock()
			if tv.clientCerts != 0 {
				t.Error("the client presented the certificate named by VAULT_CLIENT_CERT")
			}
			for _, h := range tv.headers {
				for _, name := range []string{"X-Vault-Namespace", "X-Env-Header"} {
					if h.Get(name) != "" {
						t.Errorf("a request carried %s from the environment", name)
					}
				}
			}
		})
	}
}
