package relay

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

// Upstream is an account's pool of authenticated provider connections;
// implemented by *upstream.Pool.
type Upstream interface {
	Get(ctx context.Context) (c *upstream.Conn, reused bool, err error)
	// TryGet is Get without waiting when the account's connections are
	// all in use.
	TryGet(ctx context.Context) (c *upstream.Conn, reused bool, err error)
	Put(c *upstream.Conn)
	Discard(c *upstream.Conn)
}

// maxAttempts bounds how often one step is tried on fresh connections.
const maxAttempts = 3

// transaction is one MAIL...DATA exchange relayed to the upstream.
type transaction struct {
	s       *Session
	st      *State // the configuration the transaction runs with (held)
	id      string
	account *Account
	from    string // the sender as an SMTP path for the provider
	opts    *smtp.MailOptions
	rcpts   []string // accepted recipients as SMTP paths
	log     hclog.Logger
	started time.Time

	up     *upstream.Conn
	reused bool // up served an earlier message, so it may have gone stale
	mailed bool // the provider accepted MAIL (replayed on a new connection)

	delivered bool // the provider accepted the message
	reset     bool // the upstream transaction was reset (dry run)
}

// admit checks the circuits and the account's sending limits. The circuits'
// probe slots are held only until the MAIL step is done (see mailDone).
func (tx *transaction) admit() (release func(), err error) {
	m := tx.s.b.lis.Metrics
	a := tx.account
	now := time.Now()
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	for _, c := range []struct {
		scope   string
		circuit *limits.Circuit
	}{{"provider", a.ProviderCircuit}, {"account", a.Circuit}} {
		if c.circuit == nil {
			continue
		}
		r, err := c.circuit.Allow(now)
		if err != nil {
			release()
			m.circuitRejections.WithLabelValues(c.scope).Inc()
			tx.log.Warn(c.scope+" circuit open: refusing without contacting the provider", "provider", a.Provider)
			return nil, errCircuitOpen
		}
		releases = append(releases, r)
	}
	if err := a.Limits.AllowMessage(now); err != nil {
		release()
		le, _ := limits.IsLimit(err)
		m.limitRejections.WithLabelValues(a.Address, le.Kind).Inc()
		tx.log.Warn("message refused by the account's limit", "limit", le.Kind, "max", le.Limit)
		return nil, errLimited(le)
	}
	return release, nil
}

// record tells the circuits what a step's result says about the account
// and its provider. Successes are recorded for the whole message only.
func (tx *transaction) record(err error, final bool) {
	acct, prov := outcomes(err)
	if err == nil && !final {
		return
	}
	now := time.Now()
	a := tx.account
	if acct != 0 && a.Circuit != nil {
		a.Circuit.Record(now, a.Address, acct)
	}
	if prov != 0 && a.ProviderCircuit != nil {
		a.ProviderCircuit.Record(now, a.Address, prov)
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
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Local || ue.Stage == upstream.StagePool {
		return 0, 0
	}
	switch {
	case ue.Stage == upstream.StageToken:
		return limits.Failure, 0
	case ue.Stage == upstream.StageAuth:
		return limits.Failure, limits.MemberFailure
	case ue.Untrusted, ue.Ambiguous, ue.Reply == nil, ue.Reply.Code == 421:
		return limits.Failure, limits.Failure
	case ue.TransientReply() && ue.Stage != upstream.StageRcpt:
		return limits.Failure, limits.MemberFailure
	}
	return 0, 0
}

// withConn runs op on the transaction's upstream connection. When the
// connection fails below SMTP (a stale pooled connection, a reset) or the
// provider closes it (421) before it accepted the message, the connection
// is replaced, the envelope replayed, and op tried again — with backoff and
// jitter, at most maxAttempts times — so the client still gets a truthful
// reply. Once the final dot was sent and the reply is lost, op is not
// repeated (see upstream.Error.Ambiguous).
func (tx *transaction) withConn(op func(c *upstream.Conn) error) error {
	pool := tx.account.Upstream
	ctx := upstream.WithMessageID(tx.s.b.ctx, tx.id)
	// failures counts attempts on fresh connections; a pooled connection
	// the provider dropped while idle is replaced without counting, up to
	// maxStale times (a pool can hold several stale ones).
	failures, stale := 0, 0
	for {
		if tx.up == nil {
			c, reused, err := pool.Get(ctx)
			if err == nil {
				tx.up, tx.reused = c, reused
				err = tx.replay(c)
			}
			if err != nil {
				if !tx.retry(err, &failures, &stale) {
					if broken(err) {
						tx.dropConn()
					}
					return err
				}
				continue
			}
		}
		err := op(tx.up)
		if err == nil {
			return nil
		}
		if !tx.retry(err, &failures, &stale) {
			if broken(err) {
				tx.dropConn()
			}
			return err
		}
	}
}

// maxStale bounds the replacements of stale pooled connections for one step.
const maxStale = 8

// retry decides whether err is worth another connection; if so it drops
// the current one and waits out the backoff.
func (tx *transaction) retry(err error, failures, stale *int) bool {
	if !retryable(err) || tx.s.b.ctx.Err() != nil {
		return false
	}
	// A pooled connection that fails without any reply was dropped by the
	// provider while idle; a 421 is the provider speaking, and counts.
	var ue *upstream.Error
	wasStale := tx.up != nil && tx.reused && errors.As(err, &ue) && ue.Reply == nil
	if wasStale && *stale < maxStale {
		*stale++
	} else {
		*failures++
		if *failures >= maxAttempts {
			return false
		}
	}
	tx.log.Info("upstream connection failed before the message was accepted; retrying on another connection", "error", err.Error(), "stale_pooled_connection", wasStale)
	tx.dropConn()
	if !wasStale {
		tx.backoff(*failures)
	}
	return true
}

// replay repeats MAIL and the accepted recipients on a new connection.
func (tx *transaction) replay(c *upstream.Conn) error {
	if !tx.mailed {
		return nil
	}
	if err := c.Mail(tx.from, tx.opts); err != nil {
		return err
	}
	for _, r := range tx.rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			var ue *upstream.Error
			if errors.As(err, &ue) && ue.Reply != nil && ue.Reply.Code != 421 {
				// A recipient accepted before is refused now: the
				// message cannot go out as the client sent it for now.
				// It is the provider's answer about one recipient on a
				// healthy connection: a reply (so neither retried nor
				// counted by the circuits), not a lost connection.
				return &upstream.Error{Stage: upstream.StageRcpt, Reply: &smtp.SMTPError{
					Code: 451, EnhancedCode: smtp.EnhancedCode{4, 5, 0},
					Message: "a recipient accepted earlier was refused on retry: " + ue.Reply.Message,
				}}
			}
			return err
		}
	}
	return nil
}

// send transmits the message. A transient refusal of the message (a 4xx
// other than 421 at DATA, on a healthy connection: a passing fault or
// throttling) is tried once more on another connection before the client
// hears of it.
func (tx *transaction) send(body func() (io.Reader, error)) (string, error) {
	var text string
	attempt := func() error {
		return tx.withConn(func(c *upstream.Conn) error {
			r, err := body()
			if err != nil {
				return &upstream.Error{Stage: upstream.StageData, Local: true, Err: err}
			}
			text, err = c.Data(r)
			return err
		})
	}
	err := attempt()
	var ue *upstream.Error
	if err == nil || !errors.As(err, &ue) || !ue.TransientReply() || tx.s.b.ctx.Err() != nil {
		return text, err
	}
	tx.log.Info("provider refused the message temporarily; trying once more on another connection", "reply", ue.Error())
	if rerr := tx.switchConn(); rerr != nil {
		return "", err // keep the provider's own reply for the client
	}
	return text, attempt()
}

// switchConn moves the transaction to another connection (the current one
// goes back to the pool: its transaction ended with the provider's reply)
// and replays the envelope there. Without a free connection the current
// one is used again.
func (tx *transaction) switchConn() error {
	old := tx.up
	ctx := upstream.WithMessageID(tx.s.b.ctx, tx.id)
	c, reused, err := tx.account.Upstream.TryGet(ctx)
	switch {
	case err != nil:
		c, reused = old, true
	case old != nil:
		// A 4xx to the DATA command itself (before 354) leaves the
		// transaction open: reset it before another message gets the
		// connection.
		if old.Reset() == nil {
			tx.account.Upstream.Put(old)
		} else {
			tx.account.Upstream.Discard(old)
		}
	}
	tx.up, tx.reused = c, reused
	if err := tx.replay(c); err != nil {
		if broken(err) {
			tx.dropConn()
		}
		return err
	}
	return nil
}

func (tx *transaction) dropConn() {
	if tx.up != nil {
		tx.account.Upstream.Discard(tx.up)
		tx.up = nil
	}
}

func (tx *transaction) backoff(attempt int) {
	d := time.Duration(50<<(attempt-1)) * time.Millisecond
	d = min(d, time.Second)
	d = time.Duration(float64(d) * (0.5 + rand.Float64())) // jitter
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-tx.s.b.ctx.Done():
	}
}

// retryable reports whether a failure belongs to the connection rather
// than to the message: worth another connection.
func retryable(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.Retryable()
}

// broken reports whether the connection cannot serve another command.
func broken(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.Broken()
}

// release gives the connection back: as is after a completed transaction,
// after an RSET otherwise (RFC 5321 §4.1.1.5), or closed when it failed;
// and lets go of the configuration it ran with.
func (tx *transaction) release() {
	defer tx.st.release()
	if tx.up == nil {
		return
	}
	c := tx.up
	tx.up = nil
	if c.Broken() {
		tx.account.Upstream.Discard(c)
		return
	}
	if !tx.delivered && !tx.reset && c.Reset() != nil {
		tx.account.Upstream.Discard(c)
		return
	}
	tx.account.Upstream.Put(c)
}
