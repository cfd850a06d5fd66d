package devsandbox

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Client authentication with a certificate, as Microsoft Entra does it: an
// application registers certificates, and a token request carries a JWT
// client assertion signed with one of their keys (RFC 7523 §2.2, RFC 7521
// §4.2) instead of a client secret.
//
// The AADSTS codes below are written from memory of Entra's answers, not
// from a specification: 7000218 (no credential), 7000215 (wrong secret),
// 700027 (signature: unknown key, bad signature, expired certificate),
// 700024 (time range), 700023 (audience), 700021 (client ID). Entra
// answers these with HTTP 401 and error=invalid_client, as observed in
// AzureAD/azure-activedirectory-library-for-python#79.

const (
	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// maxAssertionLifetime is the longest validity the sandbox accepts,
	// and assertionSkew the clock difference it tolerates.
	maxAssertionLifetime = 10 * time.Minute
	assertionSkew        = time.Minute
)

// AddClientCertificate registers a certificate credential of clientID,
// registering the client (without a secret) if it is unknown. A client
// with a certificate and no secret is confidential: it must authenticate
// with a client assertion.
func (ts *TokenServer) AddClientCertificate(clientID string, cert *x509.Certificate) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.clients[clientID]; !ok {
		ts.clients[clientID] = ""
	}
	ts.clientCerts[clientID] = append(ts.clientCerts[clientID], cert)
}

// RemoveClientCertificate unregisters a certificate credential of
// clientID: assertions signed with its key are refused from now on.
func (ts *TokenServer) RemoveClientCertificate(clientID string, cert *x509.Certificate) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	kept := ts.clientCerts[clientID][:0]
	for _, c := range ts.clientCerts[clientID] {
		if !c.Equal(cert) {
			kept = append(kept, c)
		}
	}
	ts.clientCerts[clientID] = kept
}

// CertificateThumbprint is the base64url SHA-256 thumbprint of a
// certificate, as in a JWT's x5t#S256 header (RFC 7515 §4.1.8); GrantsWith
// counts the tokens issued to assertions signed with its key under it.
func CertificateThumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// authenticateClient checks a token request's client authentication: a
// client assertion when one is sent, else the client secret (HTTP Basic or
// form, RFC 6749 §2.3.1). It returns the client ID. Called with mu held.
func (ts *TokenServer) authenticateClient(r *http.Request, needSecret bool) (string, *tokenError) {
	form := r.PostForm
	if form.Has("client_assertion") || form.Has("client_assertion_type") {
		return ts.checkClientAssertion(r)
	}
	id, secret := clientCredentials(r)
	if len(ts.clientCerts[id]) > 0 && ts.clients[id] == "" {
		if secret == "" {
			return "", invalidClient("AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		}
		return "", invalidClient("AADSTS7000215: Invalid client secret provided.")
	}
	return id, ts.checkClient(id, secret, needSecret)
}

func invalidClient(descr string) *tokenError {
	return &tokenError{http.StatusUnauthorized, "invalid_client", descr}
}

type assertionHeader struct {
	Alg     string `json:"alg"`
	Typ     string `json:"typ"`
	X5TS256 string `json:"x5t#S256"`
	X5T     string `json:"x5t"`
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

// checkClientAssertion verifies a client assertion as Entra does: its type,
// an RS256 signature by a registered, unexpired certificate of the client
// (found by x5t#S256, else x5t), iss = sub = the client ID (and the
// client_id parameter, when sent), aud = this endpoint, a validity of at
// most maxAssertionLifetime that includes now, and a jti never seen
// before. Called with mu held.
func (ts *TokenServer) checkClientAssertion(r *http.Request) (string, *tokenError) {
	form := r.PostForm
	if form.Get("client_assertion_type") != clientAssertionType {
		return "", &tokenError{http.StatusBadRequest, "invalid_request", "AADSTS50027: client_assertion_type must be " + clientAssertionType + "."}
	}
	parts := strings.Split(form.Get("client_assertion"), ".")
	var h assertionHeader
	var c assertionClaims
	if len(parts) != 3 || decodeSegment(parts[0], &h) != nil || decodeSegment(parts[1], &c) != nil {
		return "", invalidClient("AADSTS50027: JWT token is invalid or malformed.")
	}
	if h.Alg != "RS256" {
		return "", invalidClient(fmt.Sprintf("AADSTS50027: JWT token is invalid: alg %q is not supported here (RS256).", h.Alg))
	}
	if id := form.Get("client_id"); c.Iss == "" || c.Sub != c.Iss || id != "" && id != c.Iss {
		return "", invalidClient("AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter (iss and sub must both be the client ID).")
	}
	if terr := ts.checkAssertionSignature(c.Iss, h, parts); terr != nil {
		return "", terr
	}
	if c.Aud != ts.URL {
		return "", invalidClient(fmt.Sprintf("AADSTS700023: Client assertion audience claim does not match Realm issuer (aud %q, want %q).", c.Aud, ts.URL))
	}
	now := ts.now()
	if terr := checkAssertionTimes(c, now); terr != nil {
		return "", terr
	}
	if c.JTI == "" {
		return "", invalidClient("AADSTS50027: JWT token is invalid: the client assertion has no jti.")
	}
	if _, seen := ts.assertionJTIs[c.JTI]; seen {
		return "", invalidClient("The client assertion was already used (jti " + c.JTI + " replayed); sign a new one for every request. [sandbox check: Entra's answer to a replay is not documented]")
	}
	ts.rememberJTI(c.JTI, time.Unix(c.Exp, 0), now)
	return c.Iss, nil
}

// checkAssertionSignature finds the registered certificate the header
// names and verifies the signature with its key.
func (ts *TokenServer) checkAssertionSignature(clientID string, h assertionHeader, parts []string) *tokenError {
	cert := ts.findClientCertificate(clientID, h)
	if cert == nil {
		return invalidClient(fmt.Sprintf("AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '%s']", sha1Thumbprint(h)))
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ok || err != nil || rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return invalidClient("AADSTS700027: Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value.]")
	}
	if now := ts.now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return invalidClient(fmt.Sprintf("AADSTS700027: Client assertion contains an invalid signature. [Reason - The key used is expired., Found key 'Start=%s, End=%s']", cert.NotBefore.UTC().Format(time.DateTime), cert.NotAfter.UTC().Format(time.DateTime)))
	}
	return nil
}

// findClientCertificate returns the client's certificate whose SHA-256
// thumbprint (x5t#S256) or, failing that, SHA-1 thumbprint (x5t) the
// header names.
func (ts *TokenServer) findClientCertificate(clientID string, h assertionHeader) *x509.Certificate {
	for _, cert := range ts.clientCerts[clientID] {
		s256, s1 := sha256.Sum256(cert.Raw), sha1.Sum(cert.Raw)
		switch {
		case h.X5TS256 != "":
			if h.X5TS256 == base64.RawURLEncoding.EncodeToString(s256[:]) {
				return cert
			}
		case h.X5T != "" && h.X5T == base64.RawURLEncoding.EncodeToString(s1[:]):
			return cert
		}
	}
	return nil
}

// checkAssertionTimes requires nbf ≤ now < exp, within the skew, and a
// validity no longer than maxAssertionLifetime.
func checkAssertionTimes(c assertionClaims, now time.Time) *tokenError {
	nbf, exp := time.Unix(c.NBF, 0), time.Unix(c.Exp, 0)
	ok := c.NBF != 0 && c.Exp != 0 &&
		!nbf.After(now.Add(assertionSkew)) &&
		exp.After(now.Add(-assertionSkew)) &&
		!exp.After(now.Add(maxAssertionLifetime+assertionSkew))
	if ok {
		return nil
	}
	return invalidClient(fmt.Sprintf("AADSTS700024: Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.",
		now.UTC().Format(time.RFC3339), nbf.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339)))
}

// rememberJTI records an assertion ID until its expiry (plus the skew),
// forgetting those that expired.
func (ts *TokenServer) rememberJTI(jti string, exp, now time.Time) {
	for id, until := range ts.assertionJTIs {
		if now.After(until) {
			delete(ts.assertionJTIs, id)
		}
	}
	ts.assertionJTIs[jti] = exp.Add(assertionSkew)
}

// sha1Thumbprint is the hexadecimal SHA-1 thumbprint named by the header,
// the form Entra quotes in its errors.
func sha1Thumbprint(h assertionHeader) string {
	b, err := base64.RawURLEncoding.DecodeString(h.X5T)
	if err != nil || len(b) == 0 {
		return "(none)"
	}
	return strings.ToUpper(hex.EncodeToString(b))
}

// assertionThumbprint returns the x5t#S256 header of a client assertion,
// or "".
func assertionThumbprint(assertion string) string {
	head, _, ok := strings.Cut(assertion, ".")
	var h assertionHeader
	if !ok || decodeSegment(head, &h) != nil {
		return ""
	}
	return h.X5TS256
}

// requestClientID is the client a request claims to be: client_id (form
// or HTTP Basic), else a client assertion's issuer.
func requestClientID(r *http.Request) string {
	if id, _ := clientCredentials(r); id != "" {
		return id
	}
	parts := strings.Split(r.PostForm.Get("client_assertion"), ".")
	var c assertionClaims
	if len(parts) == 3 && decodeSegment(parts[1], &c) == nil {
		return c.Iss
	}
	return ""
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// AppCertificateOptions describe a certificate credential to issue.
type AppCertificateOptions struct {
	// CommonName defaults to "oauthrelay sandbox app".
	CommonName string
	// NotBefore and NotAfter default to an hour ago and a year from now
	// (beyond the relay's 30-day expiry warning).
	NotBefore, NotAfter time.Time
	// Bits is the RSA key size; default 2048.
	Bits int
	// PKCS1 encodes the key as "RSA PRIVATE KEY" instead of PKCS#8.
	PKCS1 bool
	// Chain appends the CA's certificate after the credential's.
	Chain bool
}

// AppCertificate is an application's certificate credential: what an
// operator uploads to the app registration (Certificate) and stores for
// the relay (CertPEM, KeyPEM).
type AppCertificate struct {
	Certificate *x509.Certificate
	CertPEM     string
	KeyPEM      string
}

// IssueAppCertificate creates an RSA key and a client certificate for it,
// signed by the sandbox CA (Entra does not check the issuer; an operator
// usually uploads a self-signed one).
func (ca *CA) IssueAppCertificate(o AppCertificateOptions) (*AppCertificate, error) {
	if o.CommonName == "" {
		o.CommonName = "oauthrelay sandbox app"
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if o.Bits == 0 {
		o.Bits = 2048
	}
	key, err := rsa.GenerateKey(rand.Reader, o.Bits)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: o.CommonName},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	var certPEM bytes.Buffer
	_ = pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	if o.Chain {
		certPEM.Write(ca.PEM)
	}
	keyBlock := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if !o.PKCS1 {
		p8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: p8}
	}
	return &AppCertificate{Certificate: cert, CertPEM: certPEM.String(), KeyPEM: string(pem.EncodeToMemory(keyBlock))}, nil
}
