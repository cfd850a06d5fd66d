package oauth

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// assertingTransport authenticates the client to the token endpoint with
// a certificate: it adds client_assertion_type and a newly signed
// client_assertion to the form of every POST to the token URL (RFC 7521
// §4.2), so that no assertion is ever sent twice by a flow that polls
// (device code, RFC 8628 §3.4) or by different requests. Requests to other
// URLs (the device authorization endpoint) pass through unchanged.
// Retries of one request by the retrying client below it resend the same
// body.
type assertingTransport struct {
	base     http.RoundTripper
	tokenURL string
	clientID string
	cred     *ClientCertificate
	now      func() time.Time
}

// withClientAssertions returns a copy of client whose token requests carry
// client assertions signed with cred.
func withClientAssertions(client *http.Client, tokenURL, clientID string, cred *ClientCertificate, now func() time.Time) *http.Client {
	c := *client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &assertingTransport{base: base, tokenURL: tokenURL, clientID: clientID, cred: cred, now: now}
	return &c
}

func (t *assertingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil || !sameEndpoint(req.URL, t.tokenURL) {
		return t.base.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	assertion, err := t.cred.Assertion(t.clientID, t.tokenURL, t.now())
	if err != nil {
		return nil, err
	}
	form.Set("client_assertion_type", ClientAssertionType)
	form.Set("client_assertion", assertion)
	encoded := form.Encode()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(strings.NewReader(encoded))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(encoded)), nil }
	out.ContentLength = int64(len(encoded))
	return t.base.RoundTrip(out)
}

// sameEndpoint reports whether u is the token URL (scheme, host and path;
// the OAuth2 library sends the form in the body, never in the query).
func sameEndpoint(u *url.URL, tokenURL string) bool {
	t, err := url.Parse(tokenURL)
	return err == nil && strings.EqualFold(u.Scheme, t.Scheme) && strings.EqualFold(u.Host, t.Host) && u.Path == t.Path
}
