package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ClientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid. Every token
// request signs a new one, so it only has to outlive one request and its
// retries; Microsoft's documentation uses ten minutes.
const AssertionLifetime = 10 * time.Minute

// MinRSABits is the smallest RSA key accepted for a certificate credential
// (Microsoft Entra requires 2048 bits).
const MinRSABits = 2048

// ClientCertificate is the certificate credential of an application (an
// Entra app registration's "Certificates & secrets"): the certificate
// uploaded to the registration and its RSA private key, with which the
// relay signs a client assertion for every token request instead of
// sending a client secret (RFC 7523 §2.2, RFC 7521 §4.2).
type ClientCertificate struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	// header is the JOSE header, the same for every assertion.
	header string
}

// ParseClientCertificate parses a PEM certificate (a chain is allowed: the
// first certificate is the credential) and its PEM RSA private key (PKCS#1
// "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY"), and checks that they belong
// together and that the key has at least MinRSABits bits. Errors describe
// the problem, never the key.
func ParseClientCertificate(certPEM, keyPEM string) (*ClientCertificate, error) {
	cert, err := firstCertificate([]byte(certPEM))
	if err != nil {
		return nil, err
	}
	key, err := rsaPrivateKey([]byte(keyPEM))
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the client certificate holds a %s public key; certificate credentials are RSA", publicKeyKind(cert))
	}
	if !pub.Equal(&key.PublicKey) {
		return nil, errors.New("the client private key does not belong to the client certificate (their public keys differ)")
	}
	if bits := key.N.BitLen(); bits < MinRSABits {
		return nil, fmt.Errorf("the client private key has %d bits; certificate credentials need an RSA key of at least %d bits", bits, MinRSABits)
	}
	header, err := assertionHeader(cert)
	if err != nil {
		return nil, err
	}
	return &ClientCertificate{cert: cert, key: key, header: header}, nil
}

// Certificate returns the credential's certificate (the first of the PEM).
func (c *ClientCertificate) Certificate() *x509.Certificate { return c.cert }

// ExpiryNote describes the certificate's validity when it needs attention
// at now: expired, not yet valid, or expiring within the warning period.
// It returns "" otherwise; expired reports whether it cannot be used.
func (c *ClientCertificate) ExpiryNote(now time.Time, warn time.Duration) (note string, expired bool) {
	day := "2006-01-02 15:04 MST"
	switch {
	case now.After(c.cert.NotAfter):
		return "the client certificate expired on " + c.cert.NotAfter.UTC().Format(day), true
	case now.Before(c.cert.NotBefore):
		return "the client certificate is not valid before " + c.cert.NotBefore.UTC().Format(day), true
	case c.cert.NotAfter.Sub(now) < warn:
		days := int(c.cert.NotAfter.Sub(now).Hours() / 24)
		return fmt.Sprintf("the client certificate expires on %s (in %d days): upload a new one to the application and store it with its key", c.cert.NotAfter.UTC().Format(day), days), false
	}
	return "", false
}

// Assertion returns a new signed client assertion of clientID for the
// token endpoint audience, valid from now for AssertionLifetime: a JWT
// (RFC 7519) signed with RS256 whose header names the certificate by its
// SHA-256 and SHA-1 thumbprints (x5t#S256, x5t; RFC 7515 §4.1.7–8), with
// iss = sub = the client ID, aud = the token URL and a random jti
// (RFC 7523 §3).
func (c *ClientCertificate) Assertion(clientID, audience string, now time.Time) (string, error) {
	jti, err := newJTI()
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(assertionClaims{
		Aud: audience, Iss: clientID, Sub: clientID, JTI: jti,
		NBF: now.Unix(), IAT: now.Unix(), Exp: now.Add(AssertionLifetime).Unix(),
	})
	if err != nil {
		return "", err
	}
	signingInput := c.header + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", errors.New("signing the client assertion failed")
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

type assertionClaims struct {
	Aud string `json:"aud"`
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	JTI string `json:"jti"`
	NBF int64  `json:"nbf"`
	IAT int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

// assertionHeader is the base64url JOSE header. Microsoft documents
// x5t#S256 and still accepts the older x5t (SHA-1) alone; both are sent.
func assertionHeader(cert *x509.Certificate) (string, error) {
	s256 := sha256.Sum256(cert.Raw)
	s1 := sha1.Sum(cert.Raw)
	h, err := json.Marshal(struct {
		Alg     string `json:"alg"`
		Typ     string `json:"typ"`
		X5TS256 string `json:"x5t#S256"`
		X5T     string `json:"x5t"`
	}{"RS256", "JWT", base64.RawURLEncoding.EncodeToString(s256[:]), base64.RawURLEncoding.EncodeToString(s1[:])})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(h), nil
}

// newJTI returns a random JWT ID in the form of a version 4 UUID, as
// Microsoft's examples show it.
func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// firstCertificate returns the first CERTIFICATE block of a PEM chain.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		switch {
		case block == nil:
			return nil, errors.New("the client certificate holds no PEM CERTIFICATE block")
		case block.Type != "CERTIFICATE":
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the client certificate does not parse: %w", err)
		}
		return cert, nil
	}
}

// rsaPrivateKey returns the first private key of a PEM text, which must be
// an unencrypted RSA key.
func rsaPrivateKey(data []byte) (*rsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("the client private key holds no PEM \"RSA PRIVATE KEY\" or \"PRIVATE KEY\" block")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("the client private key is encrypted; store it unencrypted (openssl rsa -in key.pem -out plain.pem) in the secret store")
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("the client private key (PKCS#1) does not parse")
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("the client private key (PKCS#8) does not parse")
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, errors.New("the client private key is not an RSA key; certificate credentials are RSA")
			}
			return rk, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the client private key is encrypted; store it unencrypted (openssl pkey -in key.pem -out plain.pem) in the secret store")
		case "EC PRIVATE KEY":
			return nil, errors.New("the client private key is an EC key; certificate credentials are RSA")
		}
	}
}

func publicKeyKind(cert *x509.Certificate) string {
	if cert.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
		return "non-RSA"
	}
	return cert.PublicKeyAlgorithm.String()
}
