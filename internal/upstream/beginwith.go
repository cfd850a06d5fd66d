package upstream

import (
	"context"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// BeginWith is Begin followed by AddRcpt for each of rcpts (opts[i] are
// recipient i's parameters; opts may be shorter or nil) in one exchange
// with the provider: when it offers PIPELINING (RFC 2920), MAIL, every
// RCPT and DATA leave in one write and their replies are read in order,
// and Body then sends only the message. It is meant for callers that
// hold the whole envelope (the queue); a relay session passes each
// verdict on as its client's commands come, and keeps Begin and AddRcpt.
//
// The error is Begin's: the transaction did not start, and errs is nil.
// Otherwise errs[i] is recipient i's refusal as AddRcpt returns it (nil:
// accepted); when the account's limits or a busy pool refuse a
// recipient, errs ends with that refusal and the recipients after it
// were not tried. With a recipient accepted, the caller goes on with
// Body (Abort drops the connection, which may be waiting for the
// message).
//
// A connection lost after MAIL was accepted (a 421, no reply) costs no
// verdict already read: the envelope goes on on another connection with
// MAIL, the recipients accepted so far and those not yet answered, and
// each recipient gets the tries AddRcpt would give it; the verdicts are
// those of Begin and AddRcpt one at a time.
//
// One difference with AddRcpt one at a time: every recipient's share of
// the account's recipient limits is reserved before the provider is
// asked, and a refused one gives its share back only after; at the very
// edge of a recipient quota, a later recipient can be refused by the
// limit where it would have fitted after an earlier one's refusal.
func (t *Transport) BeginWith(ctx context.Context, env transport.Envelope, rcpts []string, opts []transport.RcptOptions) (transport.Delivery, []error, error) {
	d := &delivery{t: t, env: env, log: t.logger().With("msgid", env.ID, "account", t.Account)}
	release, err := d.admit(time.Now())
	if err != nil {
		return nil, nil, err
	}
	want, errs := d.reserveRcpts(rcpts, opts)
	e := &envelopeSend{d: d, want: want, errs: errs}
	err = e.send(ctx)
	release()
	if err != nil {
		d.record(err, false)
		d.logRefusal(err)
		d.finish(time.Now())
		return nil, nil, classify(err)
	}
	return d, e.errs, nil
}

// reserveRcpts takes each recipient's share of the account's limits, in
// order, until the limits refuse one: the recipients to try, and their
// errors so far (with the limit's refusal last, when there is one).
func (d *delivery) reserveRcpts(rcpts []string, opts []transport.RcptOptions) ([]acceptedRcpt, []error) {
	now := time.Now()
	want := make([]acceptedRcpt, 0, len(rcpts))
	for i, addr := range rcpts {
		if err := d.res.AddRcpt(now); err != nil {
			errs := make([]error, len(want)+1)
			errs[len(want)] = limitError(err, d.log)
			return want, errs
		}
		var o transport.RcptOptions
		if i < len(opts) {
			o = opts[i]
		}
		want = append(want, acceptedRcpt{addr, o})
	}
	return want, make([]error, len(want))
}

// envelopeSend is BeginWith's envelope on its way to the provider.
type envelopeSend struct {
	d    *delivery
	want []acceptedRcpt // the recipients the limits let through
	errs []error        // the recipients' verdicts (see BeginWith)
	next int            // want[:next] have their verdict
}

// send runs the envelope until MAIL failed or every recipient has its
// verdict. The error is MAIL's.
func (e *envelopeSend) send(ctx context.Context) error {
	for {
		var a attempts
		err := e.d.withConnCounting(ctx, &a, func(c *Conn) error { return e.step(c, &a) })
		if err == nil || !e.d.mailed {
			return err
		}
		// No connection could carry want[next] (a recipient is left
		// unanswered after MAIL only when the connection fails): that
		// recipient's failure, as AddRcpt's would be; the rest go on
		// with tries of their own.
		stop := e.refuse(err)
		if e.next == len(e.want) {
			return nil
		}
		if stop || ctx.Err() != nil {
			e.skipRest()
			return nil
		}
	}
}

// step sends on c the recipients not yet answered, and DATA: with MAIL
// on the first connection; a later one holds MAIL and the recipients
// accepted so far already (withConn replayed them). The verdicts read
// are kept even when the connection breaks.
func (e *envelopeSend) step(c *Conn, a *attempts) error {
	d := e.d
	// DATA goes with the envelope unless the message must be checked
	// first for an extension the provider lacks (checkContent).
	data := !d.utf8Unoffered(c) && !d.eightBitUnoffered(c)
	var r envelopeReplies
	var err error
	if d.mailed {
		r, err = c.addRcpts(e.want[e.next:], data, len(d.rcpts))
	} else {
		r, err = c.sendEnvelope(d.env.From, d.env.Mail, e.want[e.next:], data)
	}
	if r.mailed || r.answered > 0 {
		// Progress: what is left gets tries of its own, as Begin and
		// each AddRcpt have theirs.
		*a = attempts{}
	}
	d.mailed = d.mailed || r.mailed
	for _, err := range r.verdicts() {
		if err == nil {
			d.rcpts = append(d.rcpts, e.want[e.next])
			e.next++
			continue
		}
		e.refuse(err)
	}
	return err
}

// refuse records want[next]'s refusal as AddRcpt does, and reports
// whether it says the provider was not contacted (a busy pool): the
// recipients after it would be refused alike, and are not tried.
func (e *envelopeSend) refuse(err error) (stop bool) {
	d := e.d
	d.res.DropRcpt() // a refused recipient costs no quota
	d.record(err, false)
	d.logRefusal(err)
	te := classify(err).(*transport.Error)
	e.errs[e.next] = te
	e.next++
	return !te.Attempted() && te.Kind != transport.KindLocal
}

// skipRest leaves the recipients after want[next] untried: errs ends
// with the last verdict, and their shares of the limits are given back.
func (e *envelopeSend) skipRest() {
	for range e.want[e.next:] {
		e.d.res.DropRcpt()
	}
	e.errs = e.errs[:e.next]
}
