// Package upstream is the SMTP client side of the relay: it connects to a
// provider's submission server with verified TLS, authenticates with an
// OAuth2 bearer token (XOAUTH2 or OAUTHBEARER), and relays one transaction,
// turning every failure into an *Error that says which step failed.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
)

// TokenSource supplies access tokens; implemented by *oauth.Source.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Invalidate drops a token the provider rejected.
	Invalidate(accessToken string)
}

// Settings describe how to reach one provider's SMTP server.
type Settings struct {
	Address     string // host:port
	ImplicitTLS bool   // TLS from the first byte (port 465) instead of STARTTLS
	// TLSConfig must carry RootCAs and ServerName; verification is always on.
	TLSConfig      *tls.Config
	Mechanism      string // "XOAUTH2" (default) or "OAUTHBEARER"
	LocalName      string // our EHLO name
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	// Provider labels metrics.
	Provider string
	Metrics  *Metrics
}

// Sender opens authenticated upstream connections for one mailbox.
type Sender struct {
	set    Settings
	user   string
	tokens TokenSource
	log    hclog.Logger
	host   string
	port   int
}

// NewSender returns a Sender that authenticates as user.
func NewSender(set Settings, user string, tokens TokenSource, log hclog.Logger) *Sender {
	if set.ConnectTimeout <= 0 {
		set.ConnectTimeout = 30 * time.Second
	}
	if set.CommandTimeout <= 0 {
		set.CommandTimeout = 5 * time.Minute
	}
	if set.Mechanism == "" {
		set.Mechanism = "XOAUTH2"
	}
	if set.LocalName == "" {
		set.LocalName = "localhost"
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if set.Metrics == nil {
		set.Metrics = NewMetrics(nil)
	}
	host, portStr, _ := net.SplitHostPort(set.Address)
	port, _ := strconv.Atoi(portStr)
	return &Sender{set: set, user: user, tokens: tokens, log: log, host: host, port: port}
}

type messageIDKey struct{}

// WithMessageID tags ctx with the relay's message ID, so that the
// upstream's log lines about the message carry it.
func WithMessageID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, messageIDKey{}, id)
}

// User is the mailbox the Sender authenticates as.
func (s *Sender) User() string { return s.user }

// Open connects and authenticates. When the provider rejects the access
// token, Open drops it from the cache, fetches a new one and tries once
// more on a fresh connection: a token can be revoked or invalidated before
// its announced expiry.
func (s *Sender) Open(ctx context.Context) (*Conn, error) {
	log := s.log
	if id, ok := ctx.Value(messageIDKey{}).(string); ok {
		log = log.With("msgid", id)
	}
	var last *Error
	for attempt := 0; attempt < 2; attempt++ {
		m := s.set.Metrics
		tok, err := s.tokens.Token(ctx)
		if err != nil {
			m.dials.WithLabelValues(s.set.Provider, "token_error").Inc()
			return nil, &Error{Stage: StageToken, Err: err}
		}
		c, err := s.dial(ctx)
		if err != nil {
			m.dials.WithLabelValues(s.set.Provider, "connect_error").Inc()
			return nil, err
		}
		err = s.auth(c, tok)
		if err == nil {
			m.dials.WithLabelValues(s.set.Provider, "success").Inc()
			m.reply(s.set.Provider, StageAuth, 235)
			m.connections.WithLabelValues(s.set.Provider, "in_use").Inc()
			now := time.Now()
			return &Conn{c: c, log: s.log, provider: s.set.Provider, m: m, created: now, lastUsed: now, state: "in_use"}, nil
		}
		m.dials.WithLabelValues(s.set.Provider, "auth_error").Inc()
		if r := replyOf(err); r != nil {
			m.reply(s.set.Provider, StageAuth, r.Code)
		}
		c.Close()
		var ue *Error
		if !errors.As(err, &ue) {
			return nil, err
		}
		last = ue
		if ue.Reply == nil || ue.Reply.Code != 535 || enhanced(ue.Reply, 7, 139) {
			break
		}
		s.tokens.Invalidate(tok)
		if attempt == 0 {
			log.Info("upstream rejected the access token; refreshing it and retrying once", "reply", ue.Error())
		}
	}
	if hint := Diagnose(last); hint != "" {
		log.Error("upstream authentication failed", "error", last.Error(), "fix", hint)
	} else {
		log.Error("upstream authentication failed", "error", last.Error())
	}
	return nil, last
}

func (s *Sender) dial(ctx context.Context) (*smtp.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, s.set.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", s.set.Address)
	if err != nil {
		return nil, &Error{Stage: StageConnect, Err: err}
	}
	// go-smtp sets its own per-command deadlines; this watchdog bounds the
	// whole connect phase (TLS, greeting, EHLO, STARTTLS) and aborts it
	// when the caller goes away.
	stop := context.AfterFunc(dctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*smtp.Client, error) {
		stop()
		raw.Close()
		if dctx.Err() != nil {
			err = fmt.Errorf("%w (connect phase exceeded %s)", err, s.set.ConnectTimeout)
		}
		var re *Error
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, &Error{Stage: StageConnect, Reply: replyOf(err), Err: err}
	}
	var c *smtp.Client
	if s.set.ImplicitTLS {
		tc := tls.Client(raw, s.set.TLSConfig)
		if err := tc.HandshakeContext(dctx); err != nil {
			return fail(fmt.Errorf("TLS handshake with %s: %w", s.set.Address, err))
		}
		c = smtp.NewClient(tc)
	} else {
		c, err = smtp.NewClientStartTLS(raw, s.set.TLSConfig)
		if err != nil {
			return fail(fmt.Errorf("STARTTLS with %s: %w", s.set.Address, err))
		}
	}
	c.CommandTimeout = s.set.CommandTimeout
	c.SubmissionTimeout = s.set.CommandTimeout
	if err := c.Hello(s.set.LocalName); err != nil {
		return fail(err)
	}
	if !stop() {
		c.Close()
		return nil, &Error{Stage: StageConnect, Err: fmt.Errorf("connect phase exceeded %s", s.set.ConnectTimeout)}
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

func (s *Sender) auth(c *smtp.Client, token string) error {
	bc := newBearerClient(s.set.Mechanism, s.user, token, s.host, s.port)
	err := c.Auth(bc)
	if err == nil {
		return nil
	}
	e := &Error{Stage: StageAuth, Reply: replyOf(err), Challenge: bc.challenge}
	if e.Reply == nil {
		e.Err = err
	}
	return e
}

// Conn is one authenticated upstream connection.
type Conn struct {
	c        *smtp.Client
	log      hclog.Logger
	provider string
	m        *Metrics
	closed   bool
	// Pool bookkeeping.
	created, lastUsed time.Time
	messages          int
	epoch             int    // the pool's epoch when opened
	state             string // "in_use" or "idle", for the connections gauge
	// broken is set once the connection failed below the SMTP layer; it
	// must not be reused.
	broken bool
}

func (c *Conn) fail(stage Stage, err error) error {
	r := replyOf(err)
	if r != nil {
		c.m.reply(c.provider, stage, r.Code)
	}
	if r == nil {
		c.broken = true
		return &Error{Stage: stage, Err: err}
	}
	if r.Code == 421 {
		c.broken = true
	}
	return &Error{Stage: stage, Reply: r}
}

// Mail starts a transaction.
func (c *Conn) Mail(from string, opts *smtp.MailOptions) error {
	if err := c.c.Mail(from, opts); err != nil {
		return c.fail(StageMail, err)
	}
	c.m.reply(c.provider, StageMail, 250)
	return nil
}

// Rcpt adds a recipient; the provider's refusal comes back as Error.Reply.
func (c *Conn) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := c.c.Rcpt(to, opts); err != nil {
		return c.fail(StageRcpt, err)
	}
	c.m.reply(c.provider, StageRcpt, 250)
	return nil
}

// Data sends the message and returns the provider's acceptance text. A
// connection lost after the final dot is reported as Ambiguous: whether the
// provider took the message cannot be known.
func (c *Conn) Data(msg []byte) (string, error) {
	w, err := c.c.Data()
	if err != nil {
		return "", c.fail(StageData, err)
	}
	if _, err := w.Write(msg); err != nil {
		return "", c.fail(StageData, err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		e := c.fail(StageData, err).(*Error)
		var op *net.OpError
		if e.Reply == nil && !(errors.As(err, &op) && op.Op == "write") {
			e.Ambiguous = true
		}
		return "", e
	}
	c.m.reply(c.provider, StageData, 250)
	c.messages++
	return resp.StatusText, nil
}

// Reset aborts the current transaction (RSET).
func (c *Conn) Reset() error {
	if err := c.c.Reset(); err != nil {
		return c.fail(StageReset, err)
	}
	return nil
}

func (c *Conn) setState(state string) {
	c.m.connections.WithLabelValues(c.provider, c.state).Dec()
	c.state = state
	c.m.connections.WithLabelValues(c.provider, state).Inc()
}

func (c *Conn) inUse()   { c.setState("in_use") }
func (c *Conn) idleNow() { c.lastUsed = time.Now(); c.setState("idle") }

// Broken reports whether the connection can no longer be used.
func (c *Conn) Broken() bool { return c.broken }

// Close ends the session politely (QUIT) when the connection is healthy and
// closes it in any case.
func (c *Conn) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.m.connections.WithLabelValues(c.provider, c.state).Dec()
	if !c.broken {
		c.c.CommandTimeout = 5 * time.Second
		if c.c.Quit() == nil {
			return
		}
	}
	c.c.Close()
}
