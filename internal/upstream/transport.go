package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Conns is an account's pool of authenticated provider connections;
// implemented by *Pool.
type Conns interface {
	Get(ctx context.Context) (c *Conn, reused bool, err error)
	// TryGet is Get without waiting when the account's connections are
	// all in use.
	TryGet(ctx context.Context) (c *Conn, reused bool, err error)
	Put(c *Conn)
	Discard(c *Conn)
}

// Transport delivers an account's messages over SMTP: the delivery
// contract of package transport on top of the account's pool, its limits
// (as reservations) and its circuits. It owns the retries on fresh
// connections, the envelope replay and the classification of failures.
type Transport struct {
	Account  string
	Provider string
	Pool     Conns
	// Limits are the account's sending limits (nil: none).
	Limits limits.Limiter
	// Circuit guards the account, ProviderCircuit its provider (shared by
	// the provider's accounts); nil disables one.
	Circuit, ProviderCircuit *limits.Circuit
	Log                      hclog.Logger
	// Member names the mailbox in the provider circuit's count of failing
	// mailboxes (default: Account); the mailboxes of a domain-wide
	// account share one name, so that senders a client makes up cannot
	// open the provider's circuit for every mailbox.
	Member string
}

var _ transport.Transport = (*Transport)(nil)

// maxAttempts bounds how often one step is tried on fresh connections.
const maxAttempts = 3

// maxStale bounds the replacements of stale pooled connections for one step.
const maxStale = 8

// Begin admits the message (circuits, then the account's limits) and
// starts the provider's transaction, so that token and connection
// problems surface before any data is sent. The circuits' probe slots are
// held for this step only: a client idling after MAIL cannot keep a
// half-open circuit's probe.
func (t *Transport) Begin(ctx context.Context, env transport.Envelope) (transport.Delivery, error) {
	d := &delivery{t: t, env: env, log: t.logger().With("msgid", env.ID, "account", t.Account)}
	release, err := d.admit(time.Now())
	if err != nil {
		return nil, err
	}
	err = d.withConn(ctx, func(c *Conn) error { return c.mailWith(env.From, env.Mail) })
	release()
	if err != nil {
		d.record(err, false)
		d.logRefusal(err)
		d.finish(time.Now())
		return nil, classify(err)
	}
	d.mailed = true
	return d, nil
}

func (t *Transport) logger() hclog.Logger {
	if t.Log == nil {
		return hclog.NewNullLogger()
	}
	return t.Log
}

// delivery is one MAIL...DATA exchange with the provider.
type delivery struct {
	t   *Transport
	env transport.Envelope
	log hclog.Logger
	res limits.Reservation

	rcpts  []acceptedRcpt // replayed on a new connection
	up     *Conn
	reused bool // up served an earlier message, so it may have gone stale
	mailed bool // the provider accepted MAIL

	delivered bool // the provider accepted the message
	reset     bool // the transaction was reset (dry run)
	done      bool
}

// acceptedRcpt is a recipient the provider accepted, with its parameters.
type acceptedRcpt struct {
	addr string
	opts transport.RcptOptions
}

// admit checks the circuits and reserves the message's share of the
// account's limits.
func (d *delivery) admit(now time.Time) (release func(), err error) {
	release, refused, err := limits.AllowAll(now, d.t.ProviderCircuit, d.t.Circuit)
	if err != nil {
		scope := circuitScope(refused, d.t.ProviderCircuit)
		d.log.Warn(scope+" circuit open: not contacting the provider", "provider", d.t.Provider)
		return nil, &transport.Error{Kind: transport.KindCircuit, Limit: scope, RetryAt: refused.RetryAt(now), Reply: errCircuitOpen, Err: err}
	}
	if d.t.Limits == nil {
		d.res = noReservation{}
		return release, nil
	}
	res, err := d.t.Limits.Reserve(now)
	if err != nil {
		release()
		return nil, limitError(err, d.log)
	}
	d.res = res
	return release, nil
}

// circuitScope names the circuit that refused: the provider's or the
// account's.
func circuitScope(refused, provider *limits.Circuit) string {
	if refused == provider {
		return "provider"
	}
	return "account"
}

// limitError classifies a refusal by the account's limits.
func limitError(err error, log hclog.Logger) error {
	le, ok := limits.IsLimit(err)
	if !ok {
		return &transport.Error{Kind: transport.KindLocal, Err: err, Reply: errLocalReply}
	}
	log.Warn("refused by the account's limit", "limit", le.Kind, "max", le.Limit)
	reply := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: fmt.Sprintf("Sending limit reached for this account (%s limit of %d); try again later", le.Kind, le.Limit)}
	if le.Kind == limits.KindMessageRcpts || le.Kind == limits.KindDailyRcpts {
		reply = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: fmt.Sprintf("Too many recipients for this account (%s limit of %d); send the rest later", le.Kind, le.Limit)}
	}
	return &transport.Error{Kind: transport.KindLimit, Limit: le.Kind, RetryAt: le.RetryAt, Reply: reply, Err: err}
}

// AddRcpt passes the recipient to the provider and returns its verdict.
func (d *delivery) AddRcpt(ctx context.Context, rcpt string, opts transport.RcptOptions) error {
	if err := d.res.AddRcpt(time.Now()); err != nil {
		return limitError(err, d.log)
	}
	if err := d.withConn(ctx, func(c *Conn) error { return c.rcptWith(rcpt, opts) }); err != nil {
		d.res.DropRcpt() // a refused recipient costs no quota
		d.record(err, false)
		d.logRefusal(err)
		return classify(err)
	}
	d.rcpts = append(d.rcpts, acceptedRcpt{rcpt, opts})
	return nil
}

// logRefusal tells the operator why the relay refused a request the
// provider cannot carry.
func (d *delivery) logRefusal(err error) {
	var ue *Error
	if errors.As(err, &ue) && ue.Refusal != nil {
		d.log.Warn("refused: the provider does not offer an extension the message needs", "stage", string(ue.Stage), "reply", transport.ReplyText(ue.Refusal))
	}
}

// Body sends the message. The reservation is kept only when the provider
// accepted it.
func (d *delivery) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	defer d.Abort()
	text, dsn, err := d.send(ctx, msg.Reader)
	d.record(err, true)
	if err != nil {
		d.logRefusal(err)
		return transport.Result{}, classify(err)
	}
	d.delivered = true
	d.res.Commit()
	return transport.Result{Reply: "250 " + text, DSN: dsn}, nil
}

// Reset ends the transaction with RSET instead of sending (dry run).
func (d *delivery) Reset(ctx context.Context) error {
	if err := d.withConn(ctx, func(c *Conn) error { return c.Reset() }); err != nil {
		return classify(err)
	}
	d.reset = true
	return nil
}

// Abort gives the connection back (after an RSET unless the transaction
// completed) and the reservation unless the message was sent.
func (d *delivery) Abort() { d.finish(time.Now()) }

func (d *delivery) finish(now time.Time) {
	if d.done {
		return
	}
	d.done = true
	if !d.delivered && d.res != nil {
		d.res.Cancel(now)
	}
	if d.up == nil {
		return
	}
	c := d.up
	d.up = nil
	if c.Broken() {
		d.t.Pool.Discard(c)
		return
	}
	if !d.delivered && !d.reset && c.Reset() != nil {
		d.t.Pool.Discard(c)
		return
	}
	d.t.Pool.Put(c)
}

// record tells the circuits what a step's result says about the account
// and its provider. Successes are recorded for the whole message only.
func (d *delivery) record(err error, final bool) {
	acct, prov := outcomes(err)
	if err == nil && !final {
		return
	}
	now := time.Now()
	if acct != 0 && d.t.Circuit != nil {
		d.t.Circuit.Record(now, d.t.Account, acct)
	}
	if prov != 0 && d.t.ProviderCircuit != nil {
		d.t.ProviderCircuit.Record(now, limits.MemberName(d.t.Member, d.t.Account), prov)
	}
}

// outcomes says whom a result counts for or against (0: neither). The
// provider's circuit sees its own failures (connections, TLS, greetings,
// lost sessions) as failures and a mailbox's transient refusals (4xx at
// MAIL or DATA: throttling) as that member's, so one throttled mailbox or
// one misbehaving client cannot stop every account. Refusals of our own
// (malformed requests), a busy pool and the provider's answers about one
// recipient or message count for neither.
func outcomes(err error) (account, provider limits.Outcome) {
	if err == nil {
		return limits.Success, limits.Success
	}
	var ue *Error
	if !errors.As(err, &ue) || ue.Local || ue.Stage == StagePool {
		return 0, 0
	}
	switch {
	case ue.Stage == StageToken:
		return limits.Failure, 0
	case ue.Stage == StageAuth:
		return limits.Failure, limits.MemberFailure
	case ue.Untrusted, ue.Ambiguous, ue.Reply == nil, ue.Reply.Code == 421:
		return limits.Failure, limits.Failure
	case ue.TransientReply() && ue.Stage != StageRcpt:
		return limits.Failure, limits.MemberFailure
	}
	return 0, 0
}

// withConn runs op on the delivery's connection. When the connection fails
// below SMTP (a stale pooled connection, a reset) or the provider closes
// it (421) before it accepted the message, the connection is replaced,
// the envelope replayed, and op tried again — with backoff and jitter, at
// most maxAttempts times — so the client still gets a truthful reply.
// Once the final dot was sent and the reply is lost, op is not repeated
// (see Error.Ambiguous).
func (d *delivery) withConn(ctx context.Context, op func(c *Conn) error) error {
	return d.withConnCounting(ctx, &attempts{}, op)
}

// attempts counts a step's tries: failures on fresh connections, and
// replacements of pooled connections the provider dropped while idle,
// which do not count as failures up to maxStale (a pool can hold several
// stale ones).
type attempts struct{ failures, stale int }

// withConnCounting is withConn counting the tries in a, which op may
// reset when it makes progress (BeginWith's envelope: each recipient
// gets the tries AddRcpt would give it).
func (d *delivery) withConnCounting(ctx context.Context, a *attempts, op func(c *Conn) error) error {
	ctx = WithMessageID(ctx, d.env.ID)
	for {
		if d.up == nil {
			if err := d.connect(ctx); err != nil {
				if !d.retry(ctx, err, a) {
					d.giveUpConn()
					return err
				}
				continue
			}
		}
		err := op(d.up)
		if err == nil {
			return nil
		}
		if !d.retry(ctx, err, a) {
			d.dropIfBroken(err)
			return err
		}
	}
}

// connect takes a connection from the pool and replays the envelope
// there.
func (d *delivery) connect(ctx context.Context) error {
	c, reused, err := d.t.Pool.Get(ctx)
	if err != nil {
		return err
	}
	d.up, d.reused = c, reused
	return d.replay(c)
}

// giveUpConn hands back a connection whose replay failed: it does not
// hold the delivery's transaction (a recipient accepted earlier may be
// missing, or MAIL itself), so the next step must not go on there; it
// replays on another connection, or on this one after an RSET.
func (d *delivery) giveUpConn() {
	c := d.up
	d.up = nil
	switch {
	case c == nil:
	case c.Broken() || c.Reset() != nil:
		d.t.Pool.Discard(c)
	default:
		d.t.Pool.Put(c)
	}
}

// retry decides whether err is worth another connection; if so it drops
// the current one and waits out the backoff.
func (d *delivery) retry(ctx context.Context, err error, a *attempts) bool {
	var ue *Error
	if !errors.As(err, &ue) || !ue.Retryable() || ctx.Err() != nil {
		return false
	}
	// A pooled connection that fails without any reply was dropped by the
	// provider while idle; a 421 is the provider speaking, and counts.
	wasStale := d.up != nil && d.reused && ue.Reply == nil
	if wasStale && a.stale < maxStale {
		a.stale++
	} else {
		a.failures++
		if a.failures >= maxAttempts {
			return false
		}
	}
	d.log.Info("upstream connection failed before the message was accepted; retrying on another connection", "error", err.Error(), "stale_pooled_connection", wasStale)
	d.dropConn()
	if !wasStale {
		backoff(ctx, a.failures)
	}
	return true
}

// replay repeats MAIL and the accepted recipients on a new connection.
func (d *delivery) replay(c *Conn) error {
	if !d.mailed {
		return nil
	}
	r, err := c.sendEnvelope(d.env.From, d.env.Mail, d.rcpts, false)
	if err != nil {
		return err
	}
	for _, err := range r.rcpts {
		var ue *Error
		switch {
		case err == nil:
		case errors.As(err, &ue) && ue.Reply != nil && ue.Reply.Code != 421:
			// A recipient accepted before is refused now: the
			// message cannot go out as the client sent it for now.
			// It is the provider's answer about one recipient on a
			// healthy connection: a reply (so neither retried nor
			// counted by the circuits), not a lost connection.
			return &Error{Stage: StageRcpt, Reply: &smtp.SMTPError{
				Code: 451, EnhancedCode: smtp.EnhancedCode{4, 5, 0},
				Message: "a recipient accepted earlier was refused on retry: " + ue.Reply.Message,
			}}
		default:
			return err
		}
	}
	return nil
}

// send transmits the message. A transient refusal of the message (a 4xx
// other than 421 at DATA, on a healthy connection: a passing fault or
// throttling) is tried once more on another connection before the client
// hears of it.
func (d *delivery) send(ctx context.Context, body func() (io.Reader, error)) (text string, dsn bool, err error) {
	attempt := func() error {
		return d.withConn(ctx, func(c *Conn) error {
			if err := c.takeDataRefusal(); err != nil {
				return err // DATA went with the envelope (BeginWith)
			}
			if !c.inData { // else checked before DATA went with the envelope
				if err := d.checkContent(c, body); err != nil {
					return err
				}
			}
			r, err := body()
			if err != nil {
				// A provider waiting for the message cannot get it now.
				c.broken = c.broken || c.inData
				return &Error{Stage: StageData, Local: true, Err: err}
			}
			text, err = c.Data(r)
			dsn = c.DSN()
			return err
		})
	}
	err = attempt()
	var ue *Error
	if err == nil || !errors.As(err, &ue) || !ue.TransientReply() || ctx.Err() != nil {
		return text, dsn, err
	}
	d.log.Info("provider refused the message temporarily; trying once more on another connection", "reply", ue.Error())
	if rerr := d.switchConn(ctx); rerr != nil {
		return "", false, err // keep the provider's own reply for the client
	}
	err = attempt()
	return text, dsn, err
}

// checkContent refuses, before DATA, a message that needs an extension
// the provider does not offer although its envelope went out without it
// (see mailParams).
func (d *delivery) checkContent(c *Conn, body func() (io.Reader, error)) error {
	if d.utf8Unoffered(c) {
		if err := checkUTF8Header(body); err != nil {
			return err
		}
	}
	if d.eightBitUnoffered(c) {
		return check7Bit(body)
	}
	return nil
}

// utf8Unoffered: the message declared SMTPUTF8, which c's provider does
// not offer, so its header must be checked.
func (d *delivery) utf8Unoffered(c *Conn) bool {
	return d.env.Mail.UTF8 && !c.c.has("SMTPUTF8")
}

// eightBitUnoffered: c's provider does not offer 8BITMIME and the message
// is not declared 7-bit, so its content must be checked. Undeclared
// content is checked too: RFC 5321 allows only 7-bit data without
// BODY=8BITMIME, but clients send 8-bit bytes anyway.
func (d *delivery) eightBitUnoffered(c *Conn) bool {
	return d.env.Mail.Body != smtp.Body7Bit && !c.c.has("8BITMIME")
}

// switchConn moves the delivery to another connection (the current one
// goes back to the pool: its transaction ended with the provider's reply)
// and replays the envelope there. Without a free connection the current
// one is used again; without that either (a replay on it was given up),
// the error is the lack of a connection, and the caller keeps the
// provider's reply.
func (d *delivery) switchConn(ctx context.Context) error {
	old := d.up
	c, reused, err := d.t.Pool.TryGet(WithMessageID(ctx, d.env.ID))
	switch {
	case err != nil && old == nil:
		return err
	case err != nil:
		c, reused = old, true
	case old != nil:
		// A 4xx to the DATA command itself (before 354) leaves the
		// transaction open: reset it before another message gets the
		// connection.
		if old.Reset() == nil {
			d.t.Pool.Put(old)
		} else {
			d.t.Pool.Discard(old)
		}
	}
	d.up, d.reused = c, reused
	if err := d.replay(c); err != nil {
		d.giveUpConn()
		return err
	}
	return nil
}

func (d *delivery) dropIfBroken(err error) {
	var ue *Error
	if errors.As(err, &ue) && ue.Broken() {
		d.dropConn()
	}
}

func (d *delivery) dropConn() {
	if d.up != nil {
		d.t.Pool.Discard(d.up)
		d.up = nil
	}
}

func backoff(ctx context.Context, attempt int) {
	dur := time.Duration(50<<(attempt-1)) * time.Millisecond
	dur = min(dur, time.Second)
	dur = time.Duration(float64(dur) * (0.5 + rand.Float64())) // jitter
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// noReservation stands for an account without limits.
type noReservation struct{}

func (noReservation) AddRcpt(time.Time) error { return nil }
func (noReservation) DropRcpt()               {}
func (noReservation) Commit()                 {}
func (noReservation) Cancel(time.Time)        {}
