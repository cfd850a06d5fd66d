package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// ListenerSettings are the per-listener rules a session applies.
type ListenerSettings struct {
	Name string
	// AllowInsecureAuth permits AUTH without TLS from non-loopback clients.
	AllowInsecureAuth bool
	Metrics           *Metrics
	// Closing, once set, makes sessions answer 421 4.3.2 to new commands
	// (the shutdown deadline passed).
	Closing *atomic.Bool
	// PerIP throttles AUTH after repeated failures from one address.
	PerIP *limits.PerIP
}

// Backend creates sessions for one listener. All listeners share the
// runtime's State pointer.
type Backend struct {
	ctx   context.Context
	state *atomic.Pointer[State]
	lis   ListenerSettings
	log   hclog.Logger
}

var _ smtp.Backend = (*Backend)(nil)

// NewBackend returns a Backend. ctx is cancelled when in-flight upstream
// work must be abandoned (hard shutdown).
func NewBackend(ctx context.Context, state *atomic.Pointer[State], lis ListenerSettings, log hclog.Logger) *Backend {
	if lis.Metrics == nil {
		lis.Metrics = NewMetrics(nil)
	}
	if lis.Closing == nil {
		lis.Closing = new(atomic.Bool)
	}
	return &Backend{ctx: ctx, state: state, lis: lis, log: log}
}

// NewSession implements smtp.Backend.
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	st := b.state.Load()
	if st == nil || b.lis.Closing.Load() {
		return nil, errShuttingDown
	}
	st.acquire()
	b.lis.Metrics.activeSessions.WithLabelValues(b.lis.Name).Inc()
	remote := c.Conn().RemoteAddr().String()
	return &Session{
		b:      b,
		st:     st,
		conn:   c,
		remote: remote,
		log:    b.log.With("listener", b.lis.Name, "remote", remote),
	}, nil
}

// Session is one client SMTP session.
type Session struct {
	b      *Backend
	st     *State
	conn   *smtp.Conn
	remote string
	log    hclog.Logger

	client    *Client
	tx        *transaction
	loggedOut bool
}

var _ smtp.AuthSession = (*Session)(nil)

func (s *Session) remoteIP() string {
	host, _, err := net.SplitHostPort(s.remote)
	if err != nil {
		return s.remote
	}
	return host
}

func (s *Session) tlsActive() bool {
	_, ok := s.conn.TLSConnectionState()
	return ok
}

func (s *Session) plaintextAuthAllowed() bool {
	return plaintextAuthAllowed(s.tlsActive(), s.b.lis.AllowInsecureAuth, s.remote)
}

// plaintextAuthAllowed applies RFC 4954 §4: passwords only travel over TLS,
// unless the client is on this host or the operator accepted the risk.
func plaintextAuthAllowed(tlsActive, allowInsecure bool, remote string) bool {
	if tlsActive || allowInsecure {
		return true
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// AuthMechanisms implements smtp.AuthSession; AUTH is not advertised where
// it would be refused.
func (s *Session) AuthMechanisms() []string {
	if !s.plaintextAuthAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *Session) Auth(mech string) (sasl.Server, error) {
	if s.b.lis.Closing.Load() {
		return nil, errShuttingDown
	}
	if !s.plaintextAuthAllowed() {
		return nil, errEncryptionRequired
	}
	if s.b.lis.PerIP != nil && s.b.lis.PerIP.AuthBlocked(s.remoteIP(), time.Now()) {
		s.log.Warn("AUTH refused: too many recent failures from this address")
		return nil, errAuthThrottled
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return errBadCredentials
			}
			return s.authenticate(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{authenticate: s.authenticate}, nil
	}
	return nil, errUnknownMechanism
}

func (s *Session) authenticate(username, password string) error {
	c, err := s.st.authenticate(username, password)
	if err != nil {
		s.b.lis.Metrics.authFailures.WithLabelValues(s.b.lis.Name).Inc()
		if s.b.lis.PerIP != nil {
			s.b.lis.PerIP.AuthFailed(s.remoteIP(), time.Now())
		}
		s.log.Warn("local authentication failed", "client", printable(username))
		return err
	}
	if s.b.lis.PerIP != nil {
		s.b.lis.PerIP.AuthSucceeded(s.remoteIP())
	}
	s.client = c
	s.log = s.log.With("client", c.Name)
	s.log.Debug("client authenticated")
	return nil
}

// Mail implements smtp.Session: check the sender, the account's circuit
// breakers and sending limits, then start the upstream transaction so that
// token and connection problems surface here.
func (s *Session) Mail(from string, opts *smtp.MailOptions) error {
	if s.b.lis.Closing.Load() {
		return errShuttingDown
	}
	if s.client == nil {
		return errAuthRequired
	}
	s.abort()
	addr := normalizeAddress(from)
	acct, ok := s.client.Allowed[addr]
	if !ok {
		s.log.Warn("sender refused", "from", printable(from))
		return errSenderNotAllowed
	}
	tx := &transaction{s: s, id: newMessageID(), account: acct, from: from, started: time.Now()}
	if opts != nil {
		tx.opts = &smtp.MailOptions{Size: opts.Size, Body: opts.Body}
	}
	tx.log = s.log.With("msgid", tx.id, "account", acct.Address)
	if err := tx.admit(); err != nil {
		return err
	}
	err := tx.withConn(func(c *upstream.Conn) error { return c.Mail(from, tx.opts) })
	if err != nil {
		reply := upstreamReply(err)
		s.count(tx, reply.Code)
		tx.log.Warn("upstream transaction not started", "error", err.Error(), "reply", reply.Code)
		tx.finish(err)
		tx.release()
		return reply
	}
	tx.mailed = true
	s.tx = tx
	return nil
}

// Rcpt implements smtp.Session, passing the provider's verdict on each
// recipient through so that no recipient is silently dropped.
func (s *Session) Rcpt(to string, opts *smtp.RcptOptions) error {
	tx := s.tx
	if tx == nil {
		return errNoTransaction
	}
	if s.b.lis.Closing.Load() {
		return errShuttingDown
	}
	if err := tx.account.Limits.AllowRecipient(len(tx.rcpts)+1, time.Now()); err != nil {
		le, _ := limits.IsLimit(err)
		s.b.lis.Metrics.limitRejections.WithLabelValues(tx.account.Address, le.Kind).Inc()
		tx.log.Warn("recipient refused by the account's limit", "limit", le.Kind, "max", le.Limit)
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients for this account (%s limit of %d); send the rest later", le.Kind, le.Limit)}
	}
	if err := tx.withConn(func(c *upstream.Conn) error { return c.Rcpt(to, nil) }); err != nil {
		reply := upstreamReply(err)
		tx.log.Info("upstream refused a recipient", "rcpt", printable(to), "reply", reply.Code)
		return reply
	}
	tx.rcpts = append(tx.rcpts, to)
	return nil
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Data implements smtp.Session. The message is held in memory (bounded by
// the listener's size limit) and sent upstream; the client's 250 is the
// provider's acceptance.
func (s *Session) Data(r io.Reader) error {
	tx := s.tx
	if tx == nil {
		return errNoTransaction
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bufPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(r); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			tx.log.Warn("message refused", "reply", se.Code, "reason", se.Message)
			return se
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message"}
	}
	log := tx.log.With("from", tx.from, "rcpts", len(tx.rcpts), "size", buf.Len())
	if s.st.DryRun {
		if err := tx.withConn(func(c *upstream.Conn) error { return c.Reset() }); err != nil {
			return upstreamReply(err)
		}
		tx.reset = true
		s.b.lis.Metrics.messages.WithLabelValues(tx.account.Group, tx.account.Address, tx.account.Provider, "dry_run").Inc()
		log.Warn("DRY RUN: message authenticated upstream and reset; NOT sent", "duration", time.Since(tx.started).Round(time.Millisecond))
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("dry run: message %s was not sent", tx.id)}
	}
	var text string
	err := tx.withConn(func(c *upstream.Conn) error {
		var err error
		text, err = c.Data(buf.Bytes())
		return err
	})
	elapsed := time.Since(tx.started)
	s.b.lis.Metrics.duration.WithLabelValues(tx.account.Provider).Observe(elapsed.Seconds())
	dur := elapsed.Round(time.Millisecond)
	if err != nil {
		reply := upstreamReply(err)
		s.count(tx, reply.Code)
		tx.finish(err)
		var ue *upstream.Error
		if errors.As(err, &ue) && ue.Ambiguous {
			log.Error("connection lost after the message was sent: delivery state unknown; answering 451 rather than resending", "error", err.Error(), "duration", dur)
		} else {
			log.Warn("message not delivered", "error", err.Error(), "reply", reply.Code, "duration", dur)
		}
		return reply
	}
	tx.delivered = true
	tx.account.Limits.Record(len(tx.rcpts), time.Now())
	tx.finish(nil)
	s.count(tx, 250)
	log.Info("message relayed", "upstream_reply", printable(text), "duration", dur)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("OK: message %s accepted by the provider", tx.id)}
}

// abort ends the current transaction, returning its upstream connection
// to the pool when it can be reused.
func (s *Session) abort() {
	if s.tx != nil {
		s.tx.release()
		s.tx = nil
	}
}

// Reset implements smtp.Session.
func (s *Session) Reset() { s.abort() }

// Logout implements smtp.Session. go-smtp calls it once per session,
// including when STARTTLS replaces the session with a new one.
func (s *Session) Logout() error {
	s.abort()
	if !s.loggedOut {
		s.loggedOut = true
		s.b.lis.Metrics.activeSessions.WithLabelValues(s.b.lis.Name).Dec()
		s.st.release()
	}
	return nil
}

func (s *Session) count(tx *transaction, code int) {
	s.b.lis.Metrics.messages.WithLabelValues(tx.account.Group, tx.account.Address, tx.account.Provider, resultOf(code)).Inc()
}

// upstreamReply maps an upstream failure to the client's reply, keeping
// the class (4xx/5xx) of the provider's own answers.
func upstreamReply(err error) *smtp.SMTPError {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
	}
	switch {
	case ue.Stage == upstream.StageToken:
		return errTokenUnavailable
	case ue.Stage == upstream.StageAuth:
		return errUpstreamAuth
	case ue.Reply != nil && (ue.Reply.Code/100 == 4 || ue.Reply.Code/100 == 5):
		code, ec := ue.Reply.Code, ue.Reply.EnhancedCode
		if code == 421 {
			// 421 would tell the client we are closing; we are not.
			code = 451
		}
		if ec == smtp.NoEnhancedCode || ec == (smtp.EnhancedCode{}) || ec[0] != code/100 {
			ec = smtp.EnhancedCode{code / 100, 0, 0}
		}
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "Provider: " + printable(ue.Reply.Message)}
	case ue.Ambiguous:
		return errAmbiguous
	case ue.Stage == upstream.StagePool:
		return errPoolBusy
	case ue.Stage == upstream.StageConnect:
		return errUpstreamUnreachable
	}
	return errUpstreamLost
}

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// newMessageID returns a short random ID that ties every log line about
// one message together.
func newMessageID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}

// printable makes client- or provider-supplied text safe for one log line
// or reply line.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.TrimSpace(s)
}

// loginServer is the server side of the obsolete but widespread LOGIN
// mechanism (draft-murchison-sasl-login), which go-sasl does not provide.
type loginServer struct {
	authenticate func(username, password string) error
	username     string
	step         int
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if response != nil && len(response) > 0 {
			// Initial response carries the username (RFC 4954 allows it).
			l.username = string(response)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.authenticate(l.username, string(response))
	}
}
