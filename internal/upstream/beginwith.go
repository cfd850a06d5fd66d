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
// accepted); when the account's limits refuse a recipient, errs ends
// with that refusal and the recipients after it were not tried. With a
// recipient accepted, the caller goes on with Body (Abort drops the
// connection, which may be waiting for the message).
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
	var r envelopeReplies
	err = d.withConn(ctx, func(c *Conn) error {
		// DATA goes with the envelope unless the message must be checked
		// first for an extension the provider lacks (checkContent).
		data := !d.utf8Unoffered(c) && !d.eightBitUnoffered(c)
		var err error
		r, err = c.sendEnvelope(env.From, env.Mail, want, data)
		return err
	})
	release()
	if err != nil {
		d.record(err, false)
		d.logRefusal(err)
		d.finish(time.Now())
		return nil, nil, classify(err)
	}
	d.mailed = true
	for i, err := range r.rcpts {
		if err == nil {
			d.rcpts = append(d.rcpts, want[i])
			continue
		}
		d.res.DropRcpt() // a refused recipient costs no quota
		d.record(err, false)
		d.logRefusal(err)
		errs[i] = classify(err)
	}
	return d, errs, nil
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
