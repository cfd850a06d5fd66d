package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"
)

// HTTPOptions configures the token endpoint HTTP client.
type HTTPOptions struct {
	// RootCAs verifies the token endpoint; nil means the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one HTTP attempt.
	Timeout time.Duration
	// RetryMax is the number of retries after the first attempt.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff.
	RetryWaitMin, RetryWaitMax time.Duration
	Logger                     hclog.Logger
}

// NewHTTPClient returns the client used for token requests: retries with
// exponential backoff on network errors and 5xx replies, never on 4xx (a 4xx
// is the endpoint's answer, such as invalid_grant, and retrying cannot change
// it), and a timeout per attempt. The last response is passed through so
// that the OAuth2 library can decode the endpoint's error.
func NewHTTPClient(o HTTPOptions) *http.Client {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.RetryWaitMin == 0 {
		o.RetryWaitMin = 200 * time.Millisecond
	}
	if o.RetryWaitMax == 0 {
		o.RetryWaitMax = 3 * time.Second
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: transport, Timeout: o.Timeout}
	rc.RetryMax = o.RetryMax
	rc.RetryWaitMin = o.RetryWaitMin
	rc.RetryWaitMax = o.RetryWaitMax
	rc.CheckRetry = retryPolicy
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.Logger = nil // retryablehttp's default logs to stderr
	if o.Logger != nil {
		rc.Logger = o.Logger
	}
	return rc.StandardClient()
}

// retryPolicy retries transport errors and 5xx (except 501, which will not
// change), and stops on certificate errors and on every 4xx.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var certErr *tls.CertificateVerificationError
		var unknownAuthority x509.UnknownAuthorityError
		var hostnameErr x509.HostnameError
		if errors.As(err, &certErr) || errors.As(err, &unknownAuthority) || errors.As(err, &hostnameErr) {
			return false, err
		}
		return true, nil
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
		return true, nil
	}
	return false, nil
}
