package relay

import (
	"context"
	"errors"
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
	Put(c *upstream.Conn)
	Discard(c *upstream.Conn)
}

// maxAttempts bounds how often one step is tried on fresh connections.
const maxAttempts = 3

// transaction is one MAIL...DATA exchange relayed to the upstream.
type transaction struct {
	s       *Session
	id      string
	account *Account
	from    string
	opts    *smtp.MailOptions
	rcpts   []string
	log     hclog.Logger
	started time.Time

	up     *upstream.Conn
	reused bool // up served an earlier message, so it may have gone stale
	mailed bool // the provider accepted MAIL (replayed on a new connection)

	delivered bool // the provider accepted the message
	reset     bool // the upstream transaction was reset (dry run)

	doneAccount, doneProvider func(ok bool) // circuit breaker outcomes
}

// admit checks the circuit breakers and the account's sending limits.
func (tx *transaction) admit() error {
	m := tx.s.b.lis.Metrics
	a := tx.account
	if a.ProviderBreaker != nil {
		done, err := a.ProviderBreaker.Allow()
		if err != nil {
			m.circuitRejections.WithLabelValues("provider").Inc()
			tx.log.Warn("provider circuit open: refusing without contacting the provider", "provider", a.Provider)
			return errCircuitOpen
		}
		tx.doneProvider = done
	}
	if a.Breaker != nil {
		done, err := a.Breaker.Allow()
		if err != nil {
			tx.finish(nil)
			m.circuitRejections.WithLabelValues("account").Inc()
			tx.log.Warn("account circuit open: refusing without contacting the provider")
			return errCircuitOpen
		}
		tx.doneAccount = done
	}
	if err := a.Limits.AllowMessage(time.Now()); err != nil {
		tx.finish(nil)
		le, _ := limits.IsLimit(err)
		m.limitRejections.WithLabelValues(a.Address, le.Kind).Inc()
		tx.log.Warn("message refused by the account's limit", "limit", le.Kind, "max", le.Limit)
		return errLimited(le)
	}
	return nil
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
				// message cannot go out as the client sent it.
				return &upstream.Error{Stage: upstream.StageRcpt, Err: errors.New("a recipient accepted earlier was refused on retry")}
			}
			return err
		}
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
	if !errors.As(err, &ue) || ue.Ambiguous {
		return false
	}
	switch ue.Stage {
	case upstream.StageToken, upstream.StageAuth, upstream.StagePool:
		return false
	}
	return ue.Reply == nil || ue.Reply.Code == 421
}

// broken reports whether the connection cannot serve another command.
func broken(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && (ue.Reply == nil || ue.Reply.Code == 421)
}

// faults says whom a failure counts against: the account (its token or
// credentials, or its provider), the provider (unreachable, failing,
// throttling). A provider's 5xx about the message or a recipient, and
// local congestion, count against neither.
func faults(err error) (account, provider bool) {
	var ue *upstream.Error
	if err == nil || !errors.As(err, &ue) {
		return false, false
	}
	switch {
	case ue.Stage == upstream.StagePool:
		return false, false
	case ue.Stage == upstream.StageToken || ue.Stage == upstream.StageAuth:
		return true, false
	case ue.Reply == nil || ue.Ambiguous:
		return true, true
	case ue.Reply.Code/100 == 4 && ue.Stage != upstream.StageRcpt:
		return true, true
	}
	return false, false
}

// finish reports the transaction's outcome to the circuit breakers, once.
func (tx *transaction) finish(err error) {
	acct, prov := faults(err)
	if tx.doneAccount != nil {
		tx.doneAccount(!acct)
		tx.doneAccount = nil
	}
	if tx.doneProvider != nil {
		tx.doneProvider(!prov)
		tx.doneProvider = nil
	}
}

// release gives the connection back: as is after a completed transaction,
// after an RSET otherwise (RFC 5321 §4.1.1.5), or closed when it failed.
func (tx *transaction) release() {
	tx.finish(nil)
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
