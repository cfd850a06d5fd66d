package server

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// SecretGetter returns the current value of a secret reference; the
// runtime passes (*secrets.Store).Get, whose values follow Vault rotations.
type SecretGetter func(config.SecretRef) (string, error)

// listenerTLSConfig builds a listener's TLS configuration. A certificate
// from files (tls_cert_file, tls_key_file) is read now, so each reload
// picks up a renewed one. A certificate from secret references (tls_cert,
// tls_key) is served as the references' current value at each handshake,
// so a rotation applies without a reload (README "listener").
func listenerTLSConfig(lc *config.Listener, get SecretGetter, log hclog.Logger) (*tls.Config, error) {
	switch {
	case lc.TLSMode == config.TLSNone:
		return nil, nil
	case lc.TLSCert.IsSet():
		return secretCertificateTLS(lc, get, log)
	}
	// LoadX509KeyPair's errors name the files and the cause, never key
	// material.
	cert, err := tls.LoadX509KeyPair(lc.TLSCertFile, lc.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: loading TLS certificate: %w", tlsOwner(lc.Name), err)
	}
	return withTLSFloor(&tls.Config{Certificates: []tls.Certificate{cert}}, lc), nil
}

// tlsOwner names whose certificate an error is about: a listener's, or
// the operator console's (the listener settings without a name, see
// consoleTLS).
func tlsOwner(listener string) string {
	if listener == "" {
		return "the admin block"
	}
	return fmt.Sprintf("listener %q", listener)
}

// withTLSFloor applies a listener's min_tls_version. Below TLS 1.2 (an
// opt-in for old devices, README "Devices") the cipher suites are set
// explicitly: Go's defaults already hold the ECDHE suites with CBC and
// SHA-1 that TLS 1.0 and 1.1 need (ECDHE-RSA-AES128-SHA and the like),
// and the opt-in adds RSA key exchange with AES-CBC (AES128-SHA,
// AES256-SHA), the only suites of many embedded TLS stacks, which Go no
// longer enables by default. 3DES (Sweet32) and RC4 (RFC 7465) stay off.
func withTLSFloor(c *tls.Config, lc *config.Listener) *tls.Config {
	c.MinVersion = lc.MinTLSVersion
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.CipherSuites = legacyCipherSuites()
	}
	return c
}

// legacyCipherSuites are Go's secure TLS 1.0–1.2 suites plus RSA key
// exchange with AES-CBC.
func legacyCipherSuites() []uint16 {
	var ids []uint16
	for _, cs := range tls.CipherSuites() {
		if slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
			ids = append(ids, cs.ID) // the TLS 1.3 suites are not configurable
		}
	}
	return append(ids, tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA)
}

func secretCertificateTLS(lc *config.Listener, get SecretGetter, log hclog.Logger) (*tls.Config, error) {
	if get == nil {
		return nil, fmt.Errorf("%s: tls_cert and tls_key need the secrets store", tlsOwner(lc.Name))
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	sc := &secretCertificate{listener: lc.Name, certRef: lc.TLSCert, keyRef: lc.TLSKey, get: get, log: log}
	if _, err := sc.certificate(nil); err != nil {
		return nil, err
	}
	return withTLSFloor(&tls.Config{GetCertificate: sc.certificate}, lc), nil
}

// secretCertificate serves a listener certificate kept in the secrets
// store. It parses a pair once and again only when a value changed; a
// rotated pair that does not parse, or whose key does not match, is logged
// once and the previous certificate stays in service.
type secretCertificate struct {
	listener        string
	certRef, keyRef config.SecretRef
	get             SecretGetter
	log             hclog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	// served is the pair current was parsed from; rejected the last one
	// refused (nil: none), so a broken rotation is logged once, not per
	// handshake.
	served   pemPair
	rejected *pemPair
}

type pemPair struct{ cert, key string }

// certificate is the tls.Config's GetCertificate.
func (s *secretCertificate) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	pair, err := s.values()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && s.current == nil:
		return nil, err
	case err != nil:
		s.rejectOnce(pemPair{}, err)
		return s.current, nil
	case s.current != nil && pair == s.served:
		return s.current, nil
	case s.current != nil && s.rejected != nil && pair == *s.rejected:
		return s.current, nil
	}
	cert, err := tls.X509KeyPair([]byte(pair.cert), []byte(pair.key))
	if err != nil {
		// The tls package's errors describe the problem, never the
		// PEM content.
		err = fmt.Errorf("%s: TLS certificate from %s and %s: %w", tlsOwner(s.listener), s.certRef, s.keyRef, err)
		if s.current == nil {
			return nil, err
		}
		s.rejectOnce(pair, err)
		return s.current, nil
	}
	if s.current != nil {
		s.log.Info("listener certificate rotated", "listener", s.listener, "tls_cert", s.certRef.String())
	}
	s.current, s.served, s.rejected = &cert, pair, nil
	return s.current, nil
}

func (s *secretCertificate) values() (pemPair, error) {
	cert, err := s.get(s.certRef)
	if err != nil {
		return pemPair{}, fmt.Errorf("%s: tls_cert: %w", tlsOwner(s.listener), err)
	}
	key, err := s.get(s.keyRef)
	if err != nil {
		return pemPair{}, fmt.Errorf("%s: tls_key: %w", tlsOwner(s.listener), err)
	}
	return pemPair{cert: cert, key: key}, nil
}

// rejectOnce logs a refused pair (the zero pair: the values could not be
// read) unless it was the last one refused. Called with s.mu held.
func (s *secretCertificate) rejectOnce(pair pemPair, err error) {
	if s.rejected != nil && *s.rejected == pair {
		return
	}
	s.rejected = &pair
	s.log.Error("the listener's rotated certificate cannot be used; still serving the previous one", "listener", s.listener, "error", err)
}

// CheckListenerTLS builds the TLS configuration of every listener from the
// runtime's configuration and secrets exactly as Start does, without
// serving; `oauthrelay check` reports what run would refuse. Each error
// begins with the listener's file:line:col.
func (r *Runtime) CheckListenerTLS() []error {
	b := r.current.Load()
	var errs []error
	for _, lc := range b.cfg.Listeners {
		if _, err := loadListenerTLS(lc, b.store.Get, r.log.Named("smtp")); err != nil {
			at := lc.DefRange
			if lc.TLSCert.IsSet() {
				at = lc.TLSCert.Range
			}
			errs = append(errs, fmt.Errorf("%s: %w", config.Position(at), err))
		}
	}
	return errs
}
