package httpsend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

var errNotAdmitted = errors.New("httpsend: AddRcpt before a successful Admit")

// Progress is how far a request got before it failed.
type Progress int32

const (
	NotConnected Progress = iota // no connection: the provider saw nothing
	Connected                    // the request was not written whole: the provider cannot have sent it
	Written                      // the request was written whole: the provider may have sent it
)

// Do sends req with client and returns the provider's answer, or the
// classified failure to get one. provider names the service in replies
// ("Microsoft Graph"). The caller closes the answer's body.
func Do(client *http.Client, req *http.Request, provider string) (*http.Response, *Failure) {
	var stage atomic.Int32 // the trace runs on the transport's goroutines
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { stage.CompareAndSwap(int32(NotConnected), int32(Connected)) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				stage.Store(int32(Written))
			}
		},
	})
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, ClassifyNetwork(req.Context(), Redact(err), Progress(stage.Load()), provider)
	}
	return resp, nil
}

// ClassifyNetwork classifies a request that got no answer: a TLS
// certificate the relay does not trust (only configuration fixes it), or
// a connection failure by its progress. A failure after ctx ended is our
// side giving up (the client left, shutdown) and counts for no circuit.
func ClassifyNetwork(ctx context.Context, err error, p Progress, provider string) *Failure {
	if untrusted(err) {
		return &Failure{Err: &transport.Error{Kind: transport.KindConnect, Reply: unreachable(provider), Err: err},
			Account: limits.Failure, Provider: limits.Failure,
			Advice: "the TLS certificate of " + provider + " is not trusted: check the CA configuration and the endpoint URL"}
	}
	var te *transport.Error
	switch p {
	case Written:
		te = &transport.Error{Kind: transport.KindAmbiguous, Reply: Ambiguous(provider), Err: err}
	case Connected:
		te = &transport.Error{Kind: transport.KindLost, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
			Message: "Connection to " + provider + " was lost before the message was sent; try again later"}, Err: err}
	default:
		te = &transport.Error{Kind: transport.KindConnect, Reply: unreachable(provider), Err: err}
	}
	if ctx.Err() != nil {
		return &Failure{Err: te}
	}
	return &Failure{Err: te, Account: limits.Failure, Provider: limits.Failure}
}

// Ambiguous is the reply for a message the provider may have sent: the
// client keeps it and decides (README "Upstream connections and
// retries": never resent silently).
func Ambiguous(provider string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Connection to " + provider + " was lost after the message was sent; it may have been delivered, check before resending"}
}

func unreachable(provider string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Cannot reach " + provider + "; try again later"}
}

func untrusted(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// Redact drops the request URL from a client error: it holds nothing
// secret, but the error reads better without it, and the mailbox is in
// the log's context already.
func Redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
