package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/spool"
	"github.com/oauthrelay/oauthrelay/internal/transport"
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
	// Budget bounds the memory all messages in flight hold (process-wide).
	Budget *spool.Budget
	// Queue, when set, takes every message of the listener for store and
	// forward (delivery = "queue"); nil delivers directly.
	Queue transport.Transport
	// History keeps the trail of directly delivered messages (nil: none).
	History History
}

// Backend creates sessions for one listener generation. All generations
// share the runtime's State pointer: authentication and sender policy are
// always checked against the current configuration.
type Backend struct {
	ctx   context.Context
	state *atomic.Pointer[State]
	lis   ListenerSettings
	log   hclog.Logger
	// retiredAt is set (unix nanoseconds) when a reload replaced this
	// generation; its sessions then have a bounded life.
	retiredAt atomic.Int64
	grace     atomic.Int64 // how long retired sessions may go on
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
	if lis.Budget == nil {
		lis.Budget = spool.NewBudget(config.DefaultMessageMemoryLimit, "")
	}
	return &Backend{ctx: ctx, state: state, lis: lis, log: log}
}

// Retire marks the generation as replaced: its sessions may finish what
// they are doing for grace, then answer 421 and must reconnect.
func (b *Backend) Retire(now time.Time, grace time.Duration) {
	b.grace.Store(int64(grace))
	b.retiredAt.Store(now.UnixNano())
}

// expired reports whether the generation was retired more than its grace
// ago.
func (b *Backend) expired(now time.Time) bool {
	at := b.retiredAt.Load()
	return at != 0 && now.UnixNano()-at > b.grace.Load()
}

// NewSession implements smtp.Backend.
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	st := b.state.Load()
	if st == nil || b.lis.Closing.Load() {
		return nil, errShuttingDown
	}
	if b.expired(time.Now()) {
		return nil, errReconnect
	}
	st.acquire()
	b.lis.Metrics.activeSessions.WithLabelValues(b.lis.Name).Inc()
	remote := c.Conn().RemoteAddr().String()
	s := &Session{
		b:      b,
		st:     st,
		conn:   c,
		remote: remote,
		addr:   remoteAddr(c.Conn().RemoteAddr()),
		log:    b.log.With("listener", b.lis.Name, "remote", remote),
	}
	if a, ok := rawConn(c).(sessionAware); ok {
		a.AttachSession(s.Idle)
	}
	return s, nil
}

// sessionAware is implemented by the listener's connections, which use
// Idle to close a retired generation's idle sessions.
type sessionAware interface{ AttachSession(idle func() bool) }

// replyCloser is implemented by the listener's connections: the
// connection closes right after the next reply is written.
type replyCloser interface{ CloseAfterNextWrite() }

// rawConn returns the listener's connection under TLS.
func rawConn(c *smtp.Conn) net.Conn {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}

// Session is one client SMTP session. go-smtp calls Data from a goroutine
// of its own for BDAT, concurrently with Reset; mu serialises the methods.
type Session struct {
	b      *Backend
	st     *State // the configuration the session started with (counted)
	conn   *smtp.Conn
	remote string
	// addr is the client's IP address (IPv4 in its 4-byte form), what
	// client networks are matched against.
	addr netip.Addr
	log  hclog.Logger

	mu sync.Mutex
	// clientName and clientHash identify the authenticated client; every
	// MAIL checks them against the current configuration.
	clientName, clientHash string
	tx                     *transaction
	inTx                   atomic.Bool
	loggedOut              bool
	// bdat is the pipe go-smtp feeds a BDAT transfer through; see
	// waitBDAT.
	bdat *io.PipeReader
}

var _ smtp.AuthSession = (*Session)(nil)

// Idle reports whether the session is between transactions.
func (s *Session) Idle() bool { return !s.inTx.Load() }

// remoteAddr returns a connection's remote IP address, an IPv4 client of
// a dual-stack socket in its IPv4 form; the zero Addr when it has none.
func remoteAddr(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(tcp.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

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
	if err := s.refuseIfEnding(); err != nil {
		return nil, err
	}
	if !s.plaintextAuthAllowed() {
		return nil, errEncryptionRequired
	}
	switch mech {
	case sasl.Plain:
		return &plainServer{authenticate: s.authenticate}, nil
	case sasl.Login:
		return &loginServer{authenticate: s.authenticate}, nil
	}
	return nil, errUnknownMechanism
}

// authenticate checks credentials against the current configuration, with
// the listener's throttle on failures per client address.
func (s *Session) authenticate(username, password string) error {
	done := func(bool) {}
	if s.b.lis.PerIP != nil {
		d, ok := s.b.lis.PerIP.AuthBegin(s.remoteIP(), time.Now())
		if !ok {
			s.log.Warn("AUTH refused: too many recent failures from this address")
			return errAuthThrottled
		}
		done = d
	}
	c, err := s.b.state.Load().authenticate(username, password)
	done(err == nil)
	if err != nil {
		s.b.lis.Metrics.authFailures.WithLabelValues(s.b.lis.Name).Inc()
		s.log.Warn("local authentication failed", "client", printable(username))
		return err
	}
	s.mu.Lock()
	s.clientName, s.clientHash = c.Name, c.PasswordHash
	s.log = s.log.With("client", c.Name)
	s.mu.Unlock()
	s.log.Debug("client authenticated")
	return nil
}

// currentState returns the configuration in force, counted as used until
// the caller releases it: a reload swapping it in between cannot retire
// the pools the caller is about to use.
func (b *Backend) currentState() *State {
	for {
		st := b.state.Load()
		st.acquire()
		if b.state.Load() == st {
			return st
		}
		st.release()
	}
}

// refuseIfEnding answers 421 once the relay is shutting down, or once the
// session's generation was retired by a reload and its grace is over; the
// connection is then closed after the reply.
func (s *Session) refuseIfEnding() error {
	if s.b.lis.Closing.Load() {
		return errShuttingDown
	}
	if s.b.expired(time.Now()) {
		s.closeAfterReply()
		return errReconnect
	}
	return nil
}

func (s *Session) closeAfterReply() {
	if c, ok := rawConn(s.conn).(replyCloser); ok {
		c.CloseAfterNextWrite()
	}
}

// currentClient returns the authenticated client as the current
// configuration knows it: nil when a reload removed it or changed its
// password hash.
func (s *Session) currentClient(st *State) *Client {
	c := st.Clients[s.clientName]
	if c == nil || c.PasswordHash != s.clientHash {
		return nil
	}
	return c
}

// identify returns the client a transaction runs for, under the current
// configuration: the one the session authenticated as (AUTH wins over the
// network), else the one whose networks hold the client's address. Its
// error is the reply: 421 for an authenticated client a reload removed,
// 530 when nothing identifies the client (no open relay).
func (s *Session) identify(st *State) (*Client, error) {
	if s.clientName != "" {
		c := s.currentClient(st)
		if c == nil {
			s.log.Warn("client removed or its password changed by a reload; closing its session")
			s.closeAfterReply()
			return nil, errCredentialsChanged
		}
		return c, nil
	}
	if c := st.clientByNetwork(s.addr); c != nil {
		return c, nil
	}
	s.log.Info("MAIL without AUTH from an address outside every client network refused")
	return nil, errAuthRequired
}

// Mail implements smtp.Session: check the sender against the current
// configuration, the account's circuits and sending limits, then start the
// upstream transaction so that token and connection problems surface here.
func (s *Session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refuseIfEnding(); err != nil {
		return err
	}
	if s.tx != nil {
		// RFC 5321 §4.1.4: MAIL inside a transaction is a sequence error.
		return errNestedMail
	}
	st := s.b.currentState()
	client, err := s.identify(st)
	if err != nil {
		st.release()
		return err
	}
	path, err := parseAddress(from)
	if from == "" {
		err = nil // the null reverse-path: refused by the sender policy
	}
	if err != nil {
		st.release()
		s.log.Warn("malformed sender address refused", "from", printable(from), "reason", err.Error())
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax: " + err.Error()}
	}
	if opts != nil && len(opts.EnvelopeID) > maxEnvID {
		st.release()
		return errParamTooLong("ENVID", maxEnvID)
	}
	utf8 := opts != nil && opts.UTF8
	if !utf8 && !isASCII(from) {
		st.release()
		s.log.Warn("UTF-8 sender address without SMTPUTF8 refused", "from", printable(from))
		return errUTF8WithoutSMTPUTF8
	}
	log := s.log
	if s.clientName == "" {
		log = log.With("client", client.Name, "identified_by", "network")
	}
	acct, path, err := senderAccount(client, from, path)
	if err != nil {
		st.release()
		log.Warn("sender refused", "from", printable(from))
		return err
	}
	tx := &transaction{st: st, id: transport.NewID(), client: client.Name, account: acct, from: path, utf8: utf8, started: time.Now()}
	tx.log = log.With("msgid", tx.id, "account", acct.Address)
	if client.sendsAs() {
		tx.sendAs, tx.mailFrom = true, "<"+from+">"
		tx.log = tx.log.With("mail_from", printable(tx.mailFrom), "send_as", acct.Address)
	}
	env := transport.Envelope{ID: tx.id, Account: acct.Address, From: path, Listener: s.b.lis.Name, Client: client.Name}
	env.Mail = transport.MailOptionsOf(opts)
	d, err := s.transportFor(acct).Begin(s.b.ctx, env)
	if err != nil {
		st.release()
		reply := s.refused(tx, err)
		s.count(tx, reply.Code)
		tx.log.Warn("transaction not started", "error", err.Error(), "reply", reply.Code)
		return reply
	}
	tx.d = d
	s.tx = tx
	s.inTx.Store(true)
	return nil
}

// senderAccount applies the client's sender policy to MAIL FROM (path is
// its SMTP form): the account that sends the message and the reverse-path
// to use. A client with send_as sends everything as that account, whatever
// its MAIL FROM (README "Devices"); any other client only as one of its
// allowed senders.
func senderAccount(c *Client, from, path string) (*Account, string, error) {
	switch {
	case c.SendAs != nil:
		return c.SendAs, c.SendAs.Address, nil
	case c.SendAsDomain != nil:
		acct, err := c.SendAsDomain.Open(c.SendAsMailbox)
		if err != nil {
			return nil, "", err
		}
		return acct, acct.Address, nil
	}
	addr := strings.ToLower(from)
	if acct, ok := c.Allowed[addr]; ok {
		return acct, path, nil
	}
	if d := c.domainFor(addr); d != nil && !strings.HasPrefix(addr, "*@") {
		acct, err := d.Open(addr)
		if err != nil {
			return nil, "", err
		}
		return acct, path, nil
	}
	return nil, "", errSenderNotAllowed
}

// Rcpt implements smtp.Session, passing the provider's verdict on each
// recipient through so that no recipient is silently dropped.
func (s *Session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.tx
	if tx == nil {
		return errNoTransaction
	}
	if s.b.lis.Closing.Load() {
		return errShuttingDown
	}
	path, err := parseAddress(to)
	if err != nil {
		tx.log.Warn("malformed recipient address refused", "rcpt", printable(to), "reason", err.Error())
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax: " + err.Error()}
	}
	if opts != nil && len(opts.OriginalRecipient) > maxORcpt {
		return errParamTooLong("ORCPT", maxORcpt)
	}
	if !tx.utf8 && !isASCII(to) {
		tx.log.Warn("UTF-8 recipient address without SMTPUTF8 refused", "rcpt", printable(to))
		return errUTF8WithoutSMTPUTF8
	}
	if max := tx.account.MaxRecipients; max > 0 && len(tx.rcpts) >= max {
		s.b.lis.Metrics.limitRejections.WithLabelValues(tx.account.Address, limits.KindMessageRcpts).Inc()
		tx.log.Warn("recipient refused by the account's limit", "limit", limits.KindMessageRcpts, "max", max)
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients for this account (%s limit of %d); send the rest later", limits.KindMessageRcpts, max)}
	}
	if err := tx.d.AddRcpt(s.b.ctx, path, transport.RcptOptionsOf(opts)); err != nil {
		reply := s.refused(tx, err)
		tx.log.Info("recipient refused", "rcpt", printable(to), "reply", reply.Code)
		return reply
	}
	tx.rcpts = append(tx.rcpts, path)
	return nil
}

// Data implements smtp.Session. The message is received completely, then
// sent upstream with the relay's Received header in front; the client's
// 250 is the provider's acceptance.
func (s *Session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pr, ok := r.(*io.PipeReader); ok {
		s.bdat = pr
	} else {
		r = &bareLFDots{r: r} // DATA, not BDAT: dots were stuffed
	}
	tx := s.tx
	if tx == nil {
		return errNoTransaction
	}
	if len(tx.rcpts) == 0 {
		return errNoRecipients
	}
	defer s.abortLocked()
	msg, err := s.receive(tx, r)
	if err != nil {
		return err
	}
	defer msg.Release()
	log := tx.log.With("from", tx.from, "rcpts", len(tx.rcpts), "size", msg.Size())
	if tx.st.DryRun {
		if err := tx.d.Reset(s.b.ctx); err != nil {
			return s.refused(tx, err)
		}
		s.b.lis.Metrics.messages.WithLabelValues(tx.account.Group, tx.account.Address, tx.account.Provider, "dry_run").Inc()
		log.Warn("DRY RUN: message authenticated upstream and reset; NOT sent", "duration", time.Since(tx.started).Round(time.Millisecond))
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("dry run: message %s was not sent", tx.id)}
	}
	res, err := tx.d.Body(s.b.ctx, msg)
	elapsed := time.Since(tx.started)
	dur := elapsed.Round(time.Millisecond)
	if !res.Queued {
		s.b.lis.Metrics.duration.WithLabelValues(tx.account.Provider).Observe(elapsed.Seconds())
	}
	if err != nil {
		reply := s.refused(tx, err)
		s.count(tx, reply.Code)
		s.history(tx, msg, reply, "")
		if transport.As(err).Kind == transport.KindAmbiguous {
			log.Error("connection lost after the message was sent: delivery state unknown; answering 451 rather than resending", "error", err.Error(), "duration", dur)
		} else {
			log.Warn("message not delivered", "error", err.Error(), "reply", reply.Code, "duration", dur)
		}
		return reply
	}
	if res.Queued {
		s.b.lis.Metrics.messages.WithLabelValues(tx.account.Group, tx.account.Address, tx.account.Provider, "queued").Inc()
		log.Info("message queued", "duration", dur)
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("OK: queued as %s", tx.id)}
	}
	s.count(tx, 250)
	s.history(tx, msg, nil, res.Reply)
	log.Info("message relayed", "upstream_reply", printable(res.Reply), "duration", dur)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: fmt.Sprintf("OK: message %s accepted by the provider", tx.id)}
}

// receive reads the message from the client behind the Received header.
// A read failure is answered with the reply it calls for; nothing is sent
// upstream.
func (s *Session) receive(tx *transaction, r io.Reader) (*message, error) {
	msg := newMessage(s.b.lis.Budget)
	err := msg.WriteString(s.receivedHeader(tx))
	switch {
	case err != nil:
	case tx.sendAs:
		err = receiveSendAs(tx, msg, r)
	default:
		_, err = msg.ReadFrom(r)
	}
	if err != nil {
		msg.Release()
		var se *smtp.SMTPError
		switch {
		case errors.Is(err, errHeaderTooLarge):
			tx.log.Warn("message refused: its header section is too large to rewrite for send_as", "reply", errHeaderTooLarge.Code, "max_header", transport.MaxHeader)
			s.b.lis.Metrics.refused.WithLabelValues(s.b.lis.Name, "header_too_large").Inc()
			s.count(tx, errHeaderTooLarge.Code)
			return nil, errHeaderTooLarge
		case errors.Is(err, errHeaderMalformed):
			tx.log.Warn("message refused: its header section has a bare CR or NUL, so the sender cannot be rewritten for send_as", "reply", errHeaderMalformed.Code)
			s.b.lis.Metrics.refused.WithLabelValues(s.b.lis.Name, "header_malformed").Inc()
			s.count(tx, errHeaderMalformed.Code)
			return nil, errHeaderMalformed
		case errors.As(err, &se):
			tx.log.Warn("message refused", "reply", se.Code, "reason", se.Message)
			s.b.lis.Metrics.refused.WithLabelValues(s.b.lis.Name, "too_large").Inc()
			return nil, se
		case errors.Is(err, smtp.ErrTooLongLine):
			tx.log.Warn("message refused: a line is longer than the listener's max_line_length", "reply", errLineTooLong.Code)
			s.b.lis.Metrics.refused.WithLabelValues(s.b.lis.Name, "line_too_long").Inc()
			s.count(tx, errLineTooLong.Code)
			return nil, errLineTooLong
		case errors.Is(err, spool.ErrFull):
			tx.log.Warn("message refused for now: the relay's memory budget for messages is used up and it cannot spill to disk", "reply", errStorageFull.Code, "error", err.Error())
			s.b.lis.Metrics.refused.WithLabelValues(s.b.lis.Name, "storage_full").Inc()
			s.count(tx, errStorageFull.Code)
			return nil, errStorageFull
		}
		tx.log.Warn("error reading the message from the client", "error", err.Error())
		return nil, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message"}
	}
	if msg.Spilled() {
		s.b.lis.Metrics.spilled.Inc()
	}
	return msg, nil
}

// abortLocked ends the current transaction, returning its upstream
// connection to the pool when it can be reused.
func (s *Session) abortLocked() {
	if s.tx != nil {
		s.tx.release()
		s.tx = nil
	}
	s.inTx.Store(false)
}

// Reset implements smtp.Session.
func (s *Session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitBDAT()
	s.abortLocked()
}

// waitBDAT waits, after an aborted BDAT transfer, until go-smtp's own
// goroutine that called Data has finished with the transfer (it closes the
// pipe's reading end last), so that the next transfer cannot overlap it.
func (s *Session) waitBDAT() {
	pr := s.bdat
	if pr == nil {
		return
	}
	s.bdat = nil
	deadline := time.Now().Add(time.Second)
	for {
		if _, err := pr.Read(nil); err == io.ErrClosedPipe || time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Logout implements smtp.Session. go-smtp calls it once per session,
// including when STARTTLS replaces the session with a new one.
func (s *Session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitBDAT()
	s.abortLocked()
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

// refused returns the reply for a failed delivery step and counts the
// refusals the relay made without contacting the provider.
func (s *Session) refused(tx *transaction, err error) *smtp.SMTPError {
	te := transport.As(err)
	m := s.b.lis.Metrics
	switch te.Kind {
	case transport.KindCircuit:
		m.circuitRejections.WithLabelValues(te.Limit).Inc()
	case transport.KindLimit:
		m.limitRejections.WithLabelValues(tx.account.Address, te.Limit).Inc()
	case transport.KindStorage:
		m.refused.WithLabelValues(s.b.lis.Name, "storage_full").Inc()
	}
	if te.Reply == nil {
		// A transport that classified a failure without a reply: a
		// temporary local error, never a crash or a silent 250.
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
	}
	return te.Reply
}

// transportFor is the way out for an account's messages on this
// listener: the queue when it stores and forwards, the account's own
// transport otherwise.
func (s *Session) transportFor(a *Account) transport.Transport {
	if s.b.lis.Queue != nil {
		return s.b.lis.Queue
	}
	return a.Transport
}

// printable makes client- or provider-supplied text safe for one log line
// or reply line.
func printable(s string) string { return transport.Printable(s, 200) }

// plainServer is the server side of PLAIN (RFC 4616). Unlike go-sasl's,
// it answers a response without its two NUL separators — a device's
// misconfiguration, not a passing fault — with a permanent 501 rather than
// a temporary 454 the device would retry forever.
type plainServer struct {
	authenticate func(username, password string) error
	done         bool
}

func (p *plainServer) Next(response []byte) ([]byte, bool, error) {
	if response == nil && !p.done {
		p.done = true
		return []byte{}, false, nil // RFC 4954 §4: an empty challenge, "334 "
	}
	parts := strings.Split(string(response), "\x00")
	if len(parts) != 3 {
		return nil, true, errMalformedPlain
	}
	// An authorization identity other than the user itself would mean
	// acting for someone else, which no local client may.
	if parts[0] != "" && parts[0] != parts[1] {
		return nil, true, errBadCredentials
	}
	return nil, true, p.authenticate(parts[1], parts[2])
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
