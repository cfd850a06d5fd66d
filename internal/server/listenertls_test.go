package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// issued is a certificate written as PEM, with its serial to recognise it
// in a handshake.
type issued struct {
	certPEM, keyPEM string
	serial          *big.Int
}

func issue(t *testing.T, ca *devsandbox.CA) issued {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := ca.WriteFiles(certPath, keyPath, "relay.test"); err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return issued{certPEM: string(certPEM), keyPEM: string(keyPEM), serial: leaf.SerialNumber}
}

// serveTLS accepts TLS connections on a loopback port with cfg and
// completes each handshake; it returns the address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1)) // until the client closes
			}()
		}
	}()
	return ln.Addr().String()
}

// servedSerial performs a verified handshake and returns the serial of the
// certificate the server presented.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) *big.Int {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "relay.test"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestListenerCertificateFromSecrets: a listener whose tls_cert/tls_key are
// file:// references serves the store's current value; after a rotation
// (Store.Refresh, as the Vault poll does for vault://) the next handshake
// gets the new certificate without a new tls.Config; a broken rotated value
// — not PEM, or a key of another certificate — keeps the previous
// certificate in service and is logged once.
func TestListenerCertificateFromSecrets(t *testing.T) {
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	first, second, third := issue(t, ca), issue(t, ca), issue(t, ca)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(cert, key string) {
		t.Helper()
		for path, v := range map[string]string{certFile: cert, keyFile: key} {
			if err := secrets.WriteFile(path, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(first.certPEM, first.keyPEM)
	ref := func(path string) config.SecretRef {
		r, err := config.ParseSecretRef("file://"+path, hcl.Range{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	lc := &config.Listener{Name: "sub", TLSMode: config.TLSImplicit, TLSCert: ref(certFile), TLSKey: ref(keyFile)}
	ctx := context.Background()
	store, err := secrets.Load(ctx, []config.SecretRef{lc.TLSCert, lc.TLSKey})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	cfg, err := loadListenerTLS(lc, store.Get, logs.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, cfg)
	expect := func(step string, want issued) {
		t.Helper()
		if got := servedSerial(t, addr, ca.Pool); got.Cmp(want.serial) != 0 {
			t.Fatalf("%s: served serial %v, want %v", step, got, want.serial)
		}
	}
	rotate := func(cert, key string) {
		t.Helper()
		write(cert, key)
		if !store.Refresh(ctx, lc.TLSCert, lc.TLSKey) {
			t.Fatal("Refresh saw no change")
		}
	}
	expect("initial", first)

	rotate(second.certPEM, second.keyPEM)
	expect("after rotation", second)

	rotate("not a certificate", second.keyPEM)
	expect("after a rotation to garbage", second)
	expect("again after a rotation to garbage", second)
	if n := strings.Count(logs.String(), "cannot be used; still serving the previous one"); n != 1 {
		t.Errorf("broken rotation logged %d times, want once:\n%s", n, logs)
	}

	rotate(third.certPEM, second.keyPEM)
	expect("after a rotation whose key does not match", second)
	if !strings.Contains(logs.String(), "private key does not match public key") {
		t.Errorf("key mismatch not logged:\n%s", logs)
	}

	rotate(third.certPEM, third.keyPEM)
	expect("after a good rotation", third)
	testutil.AssertNoSecrets(t, "logs", logs.String(), []string{first.keyPEM, second.keyPEM, third.keyPEM, keyBody(first.keyPEM), keyBody(third.keyPEM)})
}

// keyBody is the base64 of a PEM key's first line, to catch a key leaked
// without its armour.
func keyBody(p string) string {
	lines := strings.Split(p, "\n")
	if len(lines) < 2 {
		return p
	}
	return lines[1]
}

// TestListenerCertificateErrors: start-up refuses a certificate that cannot
// be used, naming the listener and the references or files, never the
// key material; certificate files are read for every generation.
func TestListenerCertificateErrors(t *testing.T) {
	ca, err := devsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	good, other := issue(t, ca), issue(t, ca)
	dir := t.TempDir()
	certFile := testutil.WriteFile(t, dir, "tls.crt", good.certPEM)
	keyFile := testutil.WriteFile(t, dir, "tls.key", good.keyPEM)
	values := map[string]string{"cert": good.certPEM, "key": other.keyPEM}
	get := func(r config.SecretRef) (string, error) {
		if v, ok := values[r.EnvName]; ok {
			return v, nil
		}
		return "", errors.New("secret env://" + r.EnvName + " was not loaded")
	}
	env := func(name string) config.SecretRef {
		r, err := config.ParseSecretRef("env://"+name, hcl.Range{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		lc      config.Listener
		wantErr string // "" = a usable TLS configuration
	}{
		{name: "files", lc: config.Listener{TLSCertFile: certFile, TLSKeyFile: keyFile}},
		{name: "missing file", lc: config.Listener{TLSCertFile: filepath.Join(dir, "nope.crt"), TLSKeyFile: keyFile}, wantErr: "nope.crt"},
		{name: "secret key of another certificate", lc: config.Listener{TLSCert: env("cert"), TLSKey: env("key")}, wantErr: "private key does not match public key"},
		{name: "secret not loaded", lc: config.Listener{TLSCert: env("cert"), TLSKey: env("missing")}, wantErr: "tls_key: secret env://missing was not loaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := tc.lc
			lc.Name, lc.TLSMode = "sub", config.TLSStartTLS
			logs := &testutil.LogBuffer{}
			cfg, err := loadListenerTLS(&lc, get, logs.Logger(t))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := servedSerial(t, serveTLS(t, cfg), ca.Pool); got.Cmp(good.serial) != 0 {
					t.Errorf("served serial %v, want %v", got, good.serial)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `listener "sub"`) {
				t.Fatalf("error %v, want one naming the listener and %q", err, tc.wantErr)
			}
			testutil.AssertNoSecrets(t, "the error", err.Error(), []string{good.keyPEM, other.keyPEM, keyBody(other.keyPEM), good.certPEM})
		})
	}
	if cfg, err := loadListenerTLS(&config.Listener{TLSMode: config.TLSNone}, nil, nil); cfg != nil || err != nil {
		t.Errorf("tls_mode none: %v %v", cfg, err)
	}
}
