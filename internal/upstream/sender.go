// Package upstream is the SMTP client side of the relay: it connects to a
// provider's submission server with verified TLS, authenticates with an
// OAuth2 bearer token (XOAUTH2 or OAUTHBEARER), and relays one transaction,
// turning every failure into an *Error that says which step failed.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/transport"
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
		c.close()
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

func (s *Sender) dial(ctx context.Context) (*smtpClient, error) {
	dctx, cancel := context.WithTimeout(ctx, s.set.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", s.set.Address)
	if err != nil {
		return nil, &Error{Stage: StageConnect, Err: err}
	}
	// Each command of the connect phase is bounded by connect_timeout; this
	// watchdog bounds the phase as a whole (TLS, greeting, EHLO, STARTTLS)
	// and aborts it when the caller goes away.
	stop := context.AfterFunc(dctx, func() { raw.Close() })
	c, err := s.handshake(raw)
	if !stop() || err != nil {
		raw.Close()
		if err == nil || dctx.Err() != nil {
			err = fmt.Errorf("connect phase exceeded %s: %w", s.set.ConnectTimeout, errOr(err, dctx.Err()))
		}
		var re *Error
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, &Error{Stage: StageConnect, Reply: replyOf(err), Untrusted: untrusted(err), Err: err}
	}
	c.timeout = s.set.CommandTimeout
	return c, nil
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// handshake runs the connect phase: TLS (implicit, or STARTTLS after an
// EHLO with our own name, RFC 3207), greeting, EHLO.
func (s *Sender) handshake(raw net.Conn) (*smtpClient, error) {
	conn := raw
	if s.set.ImplicitTLS {
		tc := tls.Client(raw, s.set.TLSConfig)
		_ = raw.SetDeadline(time.Now().Add(s.set.ConnectTimeout))
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", s.set.Address, err)
		}
		conn = tc
	}
	c := newSMTPClient(conn, s.set.ConnectTimeout)
	if err := c.greet(); err != nil {
		return nil, err
	}
	if err := c.hello(s.set.LocalName); err != nil {
		return nil, err
	}
	if !s.set.ImplicitTLS {
		if err := c.startTLS(s.set.TLSConfig); err != nil {
			return nil, fmt.Errorf("STARTTLS with %s: %w", s.set.Address, err)
		}
		if err := c.hello(s.set.LocalName); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// untrusted reports whether a TLS handshake failed because the provider's
// certificate could not be verified: no retry can fix that, only ca_file
// or tls_server_name can.
func untrusted(err error) bool {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

func (s *Sender) auth(c *smtpClient, token string) error {
	bc := newBearerClient(s.set.Mechanism, s.user, token, s.host, s.port)
	err := c.auth(bc)
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
	c        *smtpClient
	log      hclog.Logger
	provider string
	m        *Metrics
	closed   bool
	// Pool bookkeeping.
	created, lastUsed time.Time
	messages          int
	epoch             int // the pool's epoch when opened
	// slot frees the connection's slot of the pool's gate once closed.
	slot  func()
	state string // "in_use" or "idle", for the connections gauge
	// broken is set once the connection failed below the SMTP layer; it
	// must not be reused.
	broken bool
	// mail is the current transaction's MAIL options; dsn is set when its
	// DSN parameters went to the provider (it offers DSN).
	mail transport.MailOptions
	dsn  bool
	// inData is set while the provider waits for a message: it answered
	// a pipelined DATA with 354 (see sendEnvelope).
	inData bool
	// dataRefused is the provider's refusal of a pipelined DATA, which
	// Data reports as its own.
	dataRefused error
}

func (c *Conn) fail(stage Stage, err error) error {
	if errors.Is(err, errLocal) {
		return &Error{Stage: stage, Local: true, Err: err}
	}
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

// checkPath refuses an address that would not be a valid SMTP path
// (control characters, RFC 5321 §4.1.2) before anything is sent: such a
// refusal is ours, not the provider's, and leaves the connection intact.
func checkPath(addr string) error {
	for i := 0; i < len(addr); i++ {
		if b := addr[i]; b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: the address contains a control character", errLocal)
		}
	}
	return nil
}

// Mail starts a transaction. from must already be a valid SMTP path
// (quoted where needed). Parameters go with it as far as the provider
// offers their extensions; what it cannot carry is refused before
// anything is sent (see mailParams).
func (c *Conn) Mail(from string, opts *smtp.MailOptions) error {
	return c.mailWith(from, transport.MailOptionsOf(opts))
}

// Rcpt adds a recipient; the provider's refusal comes back as Error.Reply.
func (c *Conn) Rcpt(to string, opts *smtp.RcptOptions) error {
	return c.rcptWith(to, transport.RcptOptionsOf(opts))
}

func (c *Conn) mailWith(from string, opts transport.MailOptions) error {
	if err := c.awaitingMessage(StageMail); err != nil {
		return err
	}
	line, dsn, err := c.mailLine(from, opts)
	if err != nil {
		return err
	}
	if _, err := c.c.cmd(250, line); err != nil {
		return c.fail(StageMail, err)
	}
	c.mailAccepted(opts, dsn)
	return nil
}

// mailLine is the MAIL command for from, or the relay's refusal of it
// (nothing was sent).
func (c *Conn) mailLine(from string, opts transport.MailOptions) (line string, dsn bool, err error) {
	if err := checkPath(from); err != nil {
		return "", false, c.fail(StageMail, err)
	}
	params, dsn, perr := mailParams(from, opts, c.c.has)
	if perr != nil {
		return "", false, perr
	}
	return withParams("MAIL FROM:<"+from+">", params), dsn, nil
}

func (c *Conn) mailAccepted(opts transport.MailOptions, dsn bool) {
	c.mail, c.dsn = opts, dsn
	c.m.reply(c.provider, StageMail, 250)
}

// DSN reports whether the current transaction's DSN parameters went to
// the provider.
func (c *Conn) DSN() bool { return c.dsn }

func (c *Conn) rcptWith(to string, opts transport.RcptOptions) error {
	if err := c.awaitingMessage(StageRcpt); err != nil {
		return err
	}
	c.dataRefused = nil // a DATA refused before this recipient is moot
	line, err := c.rcptLine(to, opts)
	if err != nil {
		return err
	}
	if err := c.c.sendGroup(line); err != nil {
		return c.fail(StageRcpt, err)
	}
	return c.rcptReply()
}

// rcptLine is the RCPT command for to, or the relay's refusal of it
// (nothing was sent).
func (c *Conn) rcptLine(to string, opts transport.RcptOptions) (string, error) {
	if err := checkPath(to); err != nil {
		return "", c.fail(StageRcpt, err)
	}
	params, perr := rcptParams(to, c.mail, opts, c.c.has)
	if perr != nil {
		return "", perr
	}
	return withParams("RCPT TO:<"+to+">", params), nil
}

func (c *Conn) rcptReply() error {
	if err := c.c.rcptReply(); err != nil {
		return c.fail(StageRcpt, err)
	}
	c.m.reply(c.provider, StageRcpt, 250)
	return nil
}

// Data sends the message and returns the provider's acceptance text. A
// connection lost after the final dot is reported as Ambiguous: whether the
// provider took the message cannot be known.
func (c *Conn) Data(msg io.Reader) (string, error) {
	open := c.inData
	c.inData = false
	text, err := c.c.data(msg, open)
	var src *sourceError
	if errors.As(err, &src) {
		c.broken = true
		return "", &Error{Stage: StageData, Local: true, Err: err}
	}
	if err != nil {
		e := c.fail(StageData, err).(*Error)
		var lost *lostAfterDot
		if errors.As(err, &lost) {
			e.Ambiguous = true
		}
		return "", e
	}
	c.m.reply(c.provider, StageData, 250)
	c.messages++
	return text, nil
}

// takeDataRefusal returns, once, the provider's refusal of a DATA sent
// with the envelope (sendEnvelope).
func (c *Conn) takeDataRefusal() error {
	err := c.dataRefused
	c.dataRefused = nil
	return err
}

// awaitingMessage refuses a command while the provider reads everything
// as the message (after a pipelined DATA's 354): the connection can only
// be dropped, and the step is tried again on another one.
func (c *Conn) awaitingMessage(stage Stage) error {
	if !c.inData {
		return nil
	}
	c.broken = true
	return &Error{Stage: stage, Err: errors.New("the provider awaits a message; the connection cannot be reused")}
}

// Reset aborts the current transaction (RSET); the session keeps its EHLO.
func (c *Conn) Reset() error {
	c.dataRefused = nil
	if err := c.awaitingMessage(StageReset); err != nil {
		return err
	}
	if err := c.c.reset(); err != nil {
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
	if c.slot != nil {
		defer c.slot()
	}
	if !c.broken {
		c.c.timeout = 5 * time.Second
		if c.c.quit() == nil {
			return
		}
	}
	c.c.close()
}
