package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/textproto"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// rsaCertificate writes a self-signed RSA certificate for 127.0.0.1, the
// kind old devices can use (many know no ECDSA), and returns its files and
// a pool that trusts it.
func rsaCertificate(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	dir := t.TempDir()
	certFile = testutil.WriteFile(t, dir, "rsa.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = testutil.WriteFile(t, dir, "rsa.key", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	return certFile, keyFile, pool
}

// clientHello is what an old (or new) device offers.
type clientHello struct {
	min, max uint16
	suites   []uint16 // nil: Go's defaults
}

// handshake connects to a listener as the device would (STARTTLS or
// implicit TLS), completes the handshake and one command over TLS, and
// returns the negotiated state, or the error.
func handshake(t *testing.T, addr, mode string, pool *x509.CertPool, ch clientHello) (tls.ConnectionState, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: ch.min, MaxVersion: ch.max, CipherSuites: ch.suites}
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if mode == "starttls" {
		c := textproto.NewConn(nc)
		for _, s := range []struct {
			cmd  string
			code int
		}{{"", 220}, {"EHLO device.lan", 250}, {"STARTTLS", 220}} {
			if s.cmd != "" {
				_ = c.PrintfLine("%s", s.cmd)
			}
			if _, _, err := c.ReadResponse(s.code); err != nil {
				t.Fatalf("%s: %v", s.cmd, err)
			}
		}
	}
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	c := textproto.NewConn(tc)
	if mode == "implicit" {
		if _, _, err := c.ReadResponse(220); err != nil {
			return tls.ConnectionState{}, err
		}
	}
	_ = c.PrintfLine("EHLO device.lan")
	if _, _, err := c.ReadResponse(250); err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}

// min_tls_version, with real handshakes on STARTTLS and implicit-TLS
// listeners: TLS 1.2 by default; "1.0" and "1.1" let old devices in,
// including those whose only suites use RSA key exchange; "1.3" keeps TLS
// 1.2 out.
func TestMinTLSVersion(t *testing.T) {
	certFile, keyFile, pool := rsaCertificate(t)
	tls10 := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS10}
	tls11 := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS11}
	tls12 := clientHello{min: tls.VersionTLS12, max: tls.VersionTLS12}
	tls13 := clientHello{min: tls.VersionTLS13, max: tls.VersionTLS13}
	rsaKex10 := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS10, suites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	ecdhe10 := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS10, suites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}
	rsaKex12 := clientHello{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	tripleDES := clientHello{min: tls.VersionTLS10, max: tls.VersionTLS10, suites: []uint16{tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}}
	type try struct {
		name  string
		hello clientHello
		ok    bool
		suite uint16 // the suite that must be negotiated (0: any)
	}
	tests := []struct {
		setting string
		tries   []try
	}{
		{"", []try{
			{"TLS 1.0 client", tls10, false, 0},
			{"TLS 1.1 client", tls11, false, 0},
			{"TLS 1.2 client", tls12, true, 0},
			{"RSA key exchange", rsaKex12, false, 0},
		}},
		{`min_tls_version = "1.0"`, []try{
			{"TLS 1.0 client", tls10, true, 0},
			{"TLS 1.0, ECDHE-RSA-AES128-SHA only", ecdhe10, true, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA},
			{"TLS 1.0, AES128-SHA only (RSA key exchange)", rsaKex10, true, tls.TLS_RSA_WITH_AES_128_CBC_SHA},
			{"TLS 1.0, 3DES only", tripleDES, false, 0},
			{"TLS 1.3 client", tls13, true, 0},
		}},
		{`min_tls_version = "1.1"`, []try{
			{"TLS 1.0 client", tls10, false, 0},
			{"TLS 1.1 client", tls11, true, 0},
		}},
		{`min_tls_version = "1.3"`, []try{
			{"TLS 1.2 client", tls12, false, 0},
			{"TLS 1.3 client", tls13, true, 0},
		}},
	}
	for _, mode := range []string{"starttls", "implicit"} {
		for _, tc := range tests {
			name := tc.setting
			if name == "" {
				name = "default"
			}
			t.Run(mode+"/"+name, func(t *testing.T) {
				h := newHarness(t, harnessOptions{listenerTLS: mode, listenerCert: [2]string{certFile, keyFile}, listenerExtra: tc.setting + "\n  max_connections_per_ip = 0"})
				for _, tr := range tc.tries {
					st, err := handshake(t, h.addr, mode, pool, tr.hello)
					switch {
					case tr.ok && err != nil:
						t.Errorf("%s: refused: %v", tr.name, err)
					case !tr.ok && err == nil:
						t.Errorf("%s: accepted with %s %s", tr.name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
					case tr.ok && tr.suite != 0 && st.CipherSuite != tr.suite:
						t.Errorf("%s: negotiated %s", tr.name, tls.CipherSuiteName(st.CipherSuite))
					case tr.ok && st.Version < tr.hello.min || tr.ok && st.Version > tr.hello.max:
						t.Errorf("%s: negotiated %s", tr.name, tls.VersionName(st.Version))
					}
				}
				legacy := strings.Contains(tc.setting, `"1.0"`) || strings.Contains(tc.setting, `"1.1"`)
				if got := strings.Contains(h.logs.String(), "listener accepts legacy TLS"); got != legacy {
					t.Errorf("legacy TLS warning logged: %v, want %v", got, legacy)
				}
			})
		}
	}
}

// An old device's whole submission over TLS 1.0 with AES128-SHA.
func TestLegacyTLSDeviceSends(t *testing.T) {
	certFile, keyFile, pool := rsaCertificate(t)
	h := newHarness(t, harnessOptions{listenerTLS: "starttls", listenerCert: [2]string{certFile, keyFile}, listenerExtra: `min_tls_version = "1.0"`})
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	c, err := smtp.DialStartTLS(h.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(saslPlain(appClient, h.password)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(alice, []string{"x@example.net"}, strings.NewReader("Subject: old device\r\n\r\nscan\r\n")); err != nil {
		t.Fatal(err)
	}
	if msgs := h.sb.SMTP.Messages(); len(msgs) != 1 || msgs[0].Subject != "old device" {
		t.Fatalf("sandbox got %+v", msgs)
	}
}

// OpenSSL as an old device: TLS 1.0 at security level 0 over STARTTLS.
func TestLegacyTLSWithOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	certFile, keyFile, _ := rsaCertificate(t)
	for _, tc := range []struct {
		name, setting, cipher string
		ok                    bool
	}{
		{"1.0/default", `min_tls_version = "1.0"`, "DEFAULT@SECLEVEL=0", true},
		{"1.0/AES128-SHA", `min_tls_version = "1.0"`, "AES128-SHA@SECLEVEL=0", true},
		{"1.2/default", "", "DEFAULT@SECLEVEL=0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{listenerTLS: "starttls", listenerCert: [2]string{certFile, keyFile}, listenerExtra: tc.setting + "\n  max_connections_per_ip = 0"})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", h.addr, "-starttls", "smtp", "-tls1", "-cipher", tc.cipher, "-CAfile", certFile, "-verify_return_error")
			cmd.Stdin = strings.NewReader("QUIT\r\n")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			text := out.String()
			negotiated := strings.Contains(text, "Protocol  : TLSv1\n") && err == nil
			if negotiated != tc.ok {
				t.Fatalf("openssl -tls1 -cipher %s: negotiated %v (%v), want %v\n%s", tc.cipher, negotiated, err, tc.ok, text)
			}
			if want := strings.TrimSuffix(tc.cipher, "@SECLEVEL=0"); tc.ok && want != "DEFAULT" && !strings.Contains(text, "Cipher    : "+want+"\n") {
				t.Errorf("cipher %s not negotiated:\n%s", want, text)
			}
			if tc.ok && !strings.Contains(text, "Verify return code: 0 (ok)") {
				t.Errorf("certificate not verified:\n%s", text)
			}
		})
	}
}
