// Package devsandbox is an embedded stand-in for Google's and Microsoft's
// mail services: a real HTTPS OAuth2 token endpoint and a real SMTP
// submission server with STARTTLS that accepts only the bearer tokens the
// endpoint issued. `oauthrelay dev` runs the relay against it, and the
// tests use it as their provider.
package devsandbox

import (
	"io"
	"log"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Options configure a Sandbox.
type Options struct {
	// ImplicitTLS makes the SMTP server speak TLS from the first byte
	// instead of offering STARTTLS.
	ImplicitTLS bool
	Logger      hclog.Logger
	// Without lists SMTP extensions the server does not offer
	// (Ext8BitMIME, ExtSMTPUTF8, ExtDSN, ExtPipelining), to play a
	// provider without them; by default it offers all four, as
	// Microsoft's does.
	Without []string
}

// Sandbox is a running token endpoint and SMTP server sharing one CA, with
// Graph and Gmail API mail endpoints on the token endpoint's HTTPS server.
type Sandbox struct {
	CA     *CA
	Tokens *TokenServer
	SMTP   *SMTPServer
	Graph  *GraphServer
	Gmail  *GmailAPIServer
}

// Start starts the servers on 127.0.0.1 with random ports.
func Start(opts Options) (*Sandbox, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	tokens, err := newTokenServer(ca)
	if err != nil {
		return nil, err
	}
	smtpSrv, err := newSMTPServer(ca, tokens, opts, opts.Logger)
	if err != nil {
		tokens.close()
		return nil, err
	}
	base := strings.TrimSuffix(tokens.URL, "/token")
	graph := newGraphServer(base, tokens, opts.Logger)
	graph.register(tokens.mux)
	gmail := newGmailAPIServer(base, tokens, opts.Logger)
	gmail.register(tokens.mux)
	return &Sandbox{CA: ca, Tokens: tokens, SMTP: smtpSrv, Graph: graph, Gmail: gmail}, nil
}

// Close stops the servers.
func (s *Sandbox) Close() {
	s.SMTP.close()
	s.Tokens.close()
}

func nullLog() *log.Logger { return log.New(io.Discard, "", 0) }
