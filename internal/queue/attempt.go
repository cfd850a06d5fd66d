package queue

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// class is what a refusal means for the queue.
type class int

const (
	deferred class = iota // try again on the retry schedule (counts as an attempt)
	failed                // permanent: the recipient fails (5xx)
	notNow                // the provider was not contacted (limit, circuit, busy): no attempt
)

// classify decides what a transport error does to a queued message.
func classify(te *transport.Error) class {
	switch te.Kind {
	case transport.KindAuth, transport.KindToken:
		// A refused or missing token is the relay's problem, not the
		// message's: defer like Postfix's smtp_sasl_auth_soft_bounce.
		return deferred
	case transport.KindAmbiguous, transport.KindLost, transport.KindConnect:
		// The message may or may not have gone out, or the provider was
		// unreachable: never a reason to give up on it.
		return deferred
	}
	if !te.Temporary() {
		return failed
	}
	if !te.Attempted() && te.Kind != transport.KindLocal {
		return notNow
	}
	return deferred
}

func postponeReason(te *transport.Error) string {
	switch te.Kind {
	case transport.KindLimit:
		return "limit"
	case transport.KindCircuit:
		return "circuit"
	case transport.KindBusy:
		return "busy"
	}
	return "other"
}

// replyOf is the one-line reply a transport error stands for.
func replyOf(te *transport.Error) string {
	if te.Reply != nil {
		return printable(transport.ReplyText(te.Reply))
	}
	cause := "unknown error"
	if te.Err != nil {
		cause = te.Err.Error()
	}
	return printable("451 4.4.0 " + cause)
}

// outcome is what one attempt did.
type outcome struct {
	rcpts  map[string]store.Recipient // recipients whose state or reply changed
	reply  string                     // the attempt's overall reply
	notNow *transport.Error           // a limit, circuit or busy pool refused (part of) it
	// relayed are the delivered recipients whose NOTIFY asks for SUCCESS
	// when the provider did not take the DSN parameters: the queue owes
	// them a "relayed" notification (RFC 3461 §5.2.2).
	relayed []store.Recipient
}

// changed reports whether the attempt got an answer about any recipient.
func (o *outcome) changed() bool { return len(o.rcpts) > 0 }

// counted reports whether the attempt counts (it reached the provider or
// decided something); a pure "not now" does not.
func (o *outcome) counted() bool { return o.notNow == nil || o.changed() }

func (o *outcome) set(r store.Recipient, state, reply string) {
	r.State, r.LastReply = state, reply
	o.rcpts[r.Addr] = r
	o.reply = reply
}

// refused applies a transport error to recipients.
func (o *outcome) refused(err error, rcpts []store.Recipient) {
	te := transport.As(err)
	reply := replyOf(te)
	switch classify(te) {
	case notNow:
		o.notNow, o.reply = te, reply
	case failed:
		for _, r := range rcpts {
			o.set(r, store.RcptFailed, reply)
		}
	default:
		for _, r := range rcpts {
			o.set(r, store.RcptPending, reply)
		}
	}
	if len(rcpts) == 0 {
		o.reply = reply
	}
}

// pendingRcpts returns the recipients still to deliver, in envelope order.
func pendingRcpts(env *store.Envelope) []store.Recipient {
	var out []store.Recipient
	for _, r := range env.Rcpts {
		if r.State == store.RcptPending {
			out = append(out, r)
		}
	}
	return out
}

// attempt delivers a claimed message to its pending recipients once; body
// is the message when it is in memory (nil: read from the store).
func (q *Queue) attempt(ctx context.Context, c *store.Claimed, body []byte, route Route, ok bool) *outcome {
	o := &outcome{rcpts: map[string]store.Recipient{}}
	pending := pendingRcpts(&c.Envelope)
	if !ok {
		reply := fmt.Sprintf("451 4.3.5 account %s is not configured", c.Account)
		if route.Unavailable != "" {
			reply = route.Unavailable
		}
		for _, r := range pending {
			o.set(r, store.RcptPending, reply)
		}
		return o
	}
	d, accepted, err := o.begin(ctx, route.Transport, deliveryEnvelope(&c.Envelope), pending)
	if err != nil {
		o.refused(err, pending)
		return o
	}
	defer d.Abort()
	if len(accepted) == 0 {
		return o
	}
	var msg transport.Message = memMessage(body)
	if body == nil {
		stored := &storedMessage{ctx: ctx, st: q.st, id: c.ID, size: c.Size}
		defer stored.close()
		msg = stored
	}
	res, err := d.Body(ctx, msg)
	if rerr := readFailure(msg); err != nil && rerr != nil {
		// The queue could not read its own copy: not the provider's
		// verdict on the message.
		q.storeError("body")
		err = &transport.Error{Kind: transport.KindLocal, Err: fmt.Errorf("reading the queued message: %w", rerr),
			Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "the queue could not read the stored message"}}
	}
	if err != nil {
		o.refused(err, accepted)
		return o
	}
	o.delivered(res, accepted)
	return o
}

// begin starts the delivery and offers it the pending recipients, in
// order, recording each refusal: the delivery and the recipients it
// accepted. The error is the delivery's refusal to start.
func (o *outcome) begin(ctx context.Context, tr transport.Transport, env transport.Envelope, pending []store.Recipient) (transport.Delivery, []store.Recipient, error) {
	if b, ok := tr.(transport.EnvelopeBeginner); ok {
		addrs := make([]string, len(pending))
		opts := make([]transport.RcptOptions, len(pending))
		for i, r := range pending {
			addrs[i], opts[i] = r.Addr, rcptOptions(r)
		}
		d, errs, err := b.BeginWith(ctx, env, addrs, opts)
		if err != nil {
			return nil, nil, err
		}
		return d, o.verdicts(pending, errs), nil
	}
	d, err := tr.Begin(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	errs := make([]error, 0, len(pending))
	for _, r := range pending {
		err := d.AddRcpt(ctx, r.Addr, rcptOptions(r))
		errs = append(errs, err)
		if err != nil && classify(transport.As(err)) == notNow {
			break // the rest would be refused alike; they wait with the message
		}
	}
	return d, o.verdicts(pending, errs), nil
}

// verdicts records the refusals of the recipients (errs[i] is pending[i]'s;
// the recipients after a "not now" were not tried) and returns the
// accepted ones.
func (o *outcome) verdicts(pending []store.Recipient, errs []error) []store.Recipient {
	var accepted []store.Recipient
	for i, err := range errs {
		if err == nil {
			accepted = append(accepted, pending[i])
			continue
		}
		o.refused(err, []store.Recipient{pending[i]})
		if o.notNow != nil {
			break // the rest would be refused alike; they wait with the message
		}
	}
	return accepted
}

// delivered records a successful Body: every accepted recipient but those
// the transport refused at Body (Result.Failed).
func (o *outcome) delivered(res transport.Result, accepted []store.Recipient) {
	reply := printable(res.Reply)
	if reply == "" {
		reply = "250 2.0.0 accepted"
	}
	for _, r := range accepted {
		err, refused := res.Failed[r.Addr]
		if !refused {
			o.set(r, store.RcptDelivered, reply)
			if !res.DSN && transport.Notifies(rcptOptions(r).Notify, "SUCCESS") {
				o.relayed = append(o.relayed, o.rcpts[r.Addr])
			}
			continue
		}
		te := transport.As(err)
		if classify(te) == failed {
			o.set(r, store.RcptFailed, replyOf(te))
		} else {
			o.set(r, store.RcptPending, replyOf(te))
		}
	}
	o.reply = reply
}

// deliveryEnvelope is the transport envelope of a queued message. The
// queue issues notifications itself (OwnNotices): a provider without DSN
// gets the message without the DSN parameters (RFC 3461 §5.2.2).
func deliveryEnvelope(env *store.Envelope) transport.Envelope {
	te := transport.Envelope{
		ID: env.ID, Account: env.Account, From: env.From,
		Listener: env.Listener, Client: env.Client,
		Mail: MailOptions(env),
	}
	te.Mail.OwnNotices = true
	return te
}

// rcptOptions are a queued recipient's DSN parameters.
func rcptOptions(r store.Recipient) transport.RcptOptions {
	o := transport.RcptOptions{ORcpt: r.ORcpt}
	for _, n := range strings.Split(r.Notify, ",") {
		if n = strings.ToUpper(strings.TrimSpace(n)); n != "" {
			o.Notify = append(o.Notify, n)
		}
	}
	return o
}

// storedMessage is a queued message's body as a transport.Message: every
// Reader opens the stored body anew.
type storedMessage struct {
	ctx  context.Context
	st   store.Store
	id   string
	size int64

	mu   sync.Mutex
	open []io.Closer
	err  error
}

func (m *storedMessage) Reader() (io.Reader, error) {
	rc, err := m.st.Body(m.ctx, m.id)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.err = err
		return nil, err
	}
	m.open = append(m.open, rc)
	return &storedReader{rc, m}, nil
}

// storedReader notes a failure to read the stored body, which is the
// queue's problem rather than the provider's.
type storedReader struct {
	r io.Reader
	m *storedMessage
}

func (r *storedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.m.mu.Lock()
		r.m.err = err
		r.m.mu.Unlock()
	}
	return n, err
}

func (m *storedMessage) Size() int64 { return m.size }

// readFailure is the error that reading the queue's own copy of msg
// failed with, if any.
func readFailure(msg transport.Message) error {
	if m, ok := msg.(*storedMessage); ok {
		return m.failure()
	}
	return nil
}

func (m *storedMessage) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *storedMessage) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.open {
		_ = c.Close()
	}
	m.open = nil
}

// printable makes provider- or client-supplied text safe for one log or
// reply line, and bounded.
func printable(s string) string { return transport.Printable(s, 512) }
