package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Transport returns the transport of `delivery = "queue"` listeners: it
// answers for the store, 250 once the message is durable.
func (q *Queue) Transport() transport.Transport { return queueTransport{q} }

type queueTransport struct{ q *Queue }

// Begin implements transport.Transport. Nothing is stored before Body.
func (t queueTransport) Begin(_ context.Context, env transport.Envelope) (transport.Delivery, error) {
	if env.ID == "" {
		env.ID = transport.NewID()
	}
	return &enqueuer{q: t.q, env: env, seen: map[string]bool{}}, nil
}

var (
	errStorage = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage: the queue cannot store the message now; try again later"}
	errNoRcpts = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	errEnded   = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Bad sequence of commands"}
	errReading = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing"}
)

// enqueuer is one message on its way into the queue.
type enqueuer struct {
	q     *Queue
	env   transport.Envelope
	rcpts []store.Recipient
	seen  map[string]bool
	ended bool
}

// AddRcpt implements transport.Delivery. The session validated the
// address and applied the account's limits; a repeated recipient is
// accepted once (the store keys recipients by address), with the DSN
// parameters it first came with.
func (e *enqueuer) AddRcpt(_ context.Context, rcpt string, opts transport.RcptOptions) error {
	if e.ended {
		return &transport.Error{Kind: transport.KindLocal, Reply: errEnded, Err: errors.New("queue: recipient after the end of the delivery")}
	}
	if !e.seen[rcpt] {
		e.seen[rcpt] = true
		e.rcpts = append(e.rcpts, store.Recipient{Addr: rcpt, State: store.RcptPending,
			Notify: strings.Join(opts.Notify, ","), ORcpt: opts.ORcpt})
	}
	return nil
}

// Body implements transport.Delivery: the message is stored, and the
// reply is a success only once the store has committed it.
func (e *enqueuer) Body(ctx context.Context, msg transport.Message) (transport.Result, error) {
	if e.ended {
		return transport.Result{}, &transport.Error{Kind: transport.KindLocal, Reply: errEnded, Err: errors.New("queue: message after the end of the delivery")}
	}
	e.ended = true
	if len(e.rcpts) == 0 {
		return transport.Result{}, &transport.Error{Kind: transport.KindLocal, Reply: errNoRcpts, Err: errors.New("queue: message without recipients")}
	}
	q := e.q
	now := q.now()
	f := q.reserveFresh(e.env.Account, msg.Size(), now)
	nm, src, err := e.newMessage(msg, f, now)
	if err != nil {
		if f != nil {
			f.cancel()
		}
		return transport.Result{}, &transport.Error{Kind: transport.KindLocal, Reply: errReading, Err: fmt.Errorf("queue: reading the received message: %w", err)}
	}
	if err := q.st.Enqueue(ctx, nm); err != nil {
		if f != nil {
			f.cancel()
		}
		return transport.Result{}, e.enqueueFailed(ctx, src, err)
	}
	q.m.enqueued.WithLabelValues(e.env.Account).Inc()
	q.log.Debug("message queued", "id", e.env.ID, "account", e.env.Account, "rcpts", len(e.rcpts), "size", nm.Size, "handed_over", f != nil)
	q.changed()
	if f != nil {
		f.start(nm.Envelope)
	} else {
		q.Kick()
	}
	return transport.Result{Queued: true, Reply: "queued as " + e.env.ID}, nil
}

// newMessage is the message to store: read into the fresh slot's memory
// when there is one (and then leased to this instance), else streamed
// from the received message into the store.
func (e *enqueuer) newMessage(msg transport.Message, f *fresh, now time.Time) (*store.NewMessage, *sourceReader, error) {
	r, err := msg.Reader()
	if err != nil {
		return nil, nil, err
	}
	if f != nil {
		if r, err = f.read(r); err != nil {
			return nil, nil, err
		}
	}
	// The Message-ID and the Subject come from a bounded read of the
	// header section, which is then passed on in front of the rest: the
	// body is read once.
	br := bufio.NewReader(r)
	consumed, header, err := transport.ReadHeader(br, transport.MaxHeader)
	if err != nil {
		return nil, nil, err
	}
	src := &sourceReader{r: io.MultiReader(bytes.NewReader(consumed), br), msg: msg}
	nm := &store.NewMessage{Envelope: e.envelope(msg.Size(), transport.MessageID(header), now), Body: src,
		Subject: e.q.historySubject(header)}
	if f != nil {
		nm.Body = bytes.NewReader(f.buf.Bytes()) // rewindable: the store may run its batch again
		nm.LeaseOwner, nm.LeaseUntil = f.owner, f.until
	}
	return nm, src, nil
}

// historySubject is the Subject a new message's history record keeps:
// none unless history_subjects is on (README "store").
func (q *Queue) historySubject(header []byte) string {
	if !q.config().HistorySubjects {
		return ""
	}
	return transport.Subject(header)
}

// enqueueFailed is the client's reply when the store did not take the
// message: a local error when the received message could not be read,
// else 452 (the store is unavailable or full).
func (e *enqueuer) enqueueFailed(ctx context.Context, src *sourceReader, err error) error {
	q := e.q
	if rerr := src.failure(); rerr != nil {
		return &transport.Error{Kind: transport.KindLocal, Reply: errReading, Err: fmt.Errorf("queue: reading the received message: %w", rerr)}
	}
	if ctx.Err() != nil {
		q.log.Info("message not stored: the session ended first", "id", e.env.ID, "account", e.env.Account)
	} else {
		q.storeError("enqueue")
		q.log.Error("could not store a message; the client is told to retry", "id", e.env.ID, "account", e.env.Account, "error", err)
	}
	return &transport.Error{Kind: transport.KindStorage, Reply: errStorage, Err: fmt.Errorf("queue: storing the message: %w", err)}
}

// envelope is the stored envelope of the message.
func (e *enqueuer) envelope(size int64, headerID string, now time.Time) store.Envelope {
	cfg := e.q.config()
	env := store.Envelope{
		ID:          e.env.ID,
		Account:     e.env.Account,
		Listener:    e.env.Listener,
		Client:      e.env.Client,
		From:        e.env.From,
		Rcpts:       e.rcpts,
		Size:        size,
		HeaderID:    headerID,
		Received:    now,
		Expires:     now.Add(cfg.MaxLifetime),
		NextAttempt: now,
		State:       store.StateQueued,
	}
	env.MailParams = mailParams(e.env.Mail)
	return env
}

// mailParams are the MAIL parameters a queued message keeps for its
// delivery, in their SMTP form; ENVID xtext-encoded (RFC 3461 §4).
func mailParams(o transport.MailOptions) []string {
	var params []string
	if o.Body != "" {
		params = append(params, "BODY="+string(o.Body))
	}
	if o.UTF8 {
		params = append(params, "SMTPUTF8")
	}
	if o.Return != "" {
		params = append(params, "RET="+o.Return)
	}
	if o.EnvelopeID != "" {
		params = append(params, "ENVID="+transport.XText(o.EnvelopeID))
	}
	return params
}

// MailOptions are the MAIL parameters of a queued message as the delivery
// contract passes them on (the inverse of mailParams). Parameters it does
// not know are ignored.
func MailOptions(env *store.Envelope) transport.MailOptions {
	o := transport.MailOptions{Size: env.Size}
	for _, p := range env.MailParams {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "BODY":
			o.Body = smtp.BodyType(strings.ToUpper(v))
		case "SMTPUTF8":
			o.UTF8 = true
		case "RET":
			o.Return = strings.ToUpper(v)
		case "ENVID":
			if id, err := transport.ParseXText(v); err == nil {
				o.EnvelopeID = id
			}
		}
	}
	return o
}

// Reset implements transport.Delivery: a dry run stores nothing, but the
// store must have been able to take the message.
func (e *enqueuer) Reset(ctx context.Context) error {
	e.ended = true
	if err := e.q.st.Ping(ctx); err != nil {
		e.q.storeError("ping")
		return &transport.Error{Kind: transport.KindStorage, Reply: errStorage, Err: fmt.Errorf("queue: store unavailable: %w", err)}
	}
	return nil
}

// Abort implements transport.Delivery: nothing was stored.
func (e *enqueuer) Abort() { e.ended = true }

// sourceReader remembers a failure to read the received message, so that
// it is not mistaken for the store's. It can start over (Seek to 0) by
// opening the message again, so that the store may run its batch twice.
type sourceReader struct {
	r   io.Reader
	msg transport.Message
	off int64 // bytes read since the start
	mu  sync.Mutex
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.off += int64(n)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	return n, err
}

// Seek tells where the reader is (offset 0 from io.SeekCurrent) and goes
// back to the start (offset 0 from io.SeekStart); nothing else.
func (s *sourceReader) Seek(offset int64, whence int) (int64, error) {
	switch {
	case offset == 0 && whence == io.SeekCurrent:
		return s.off, nil
	case offset == 0 && whence == io.SeekStart:
		r, err := s.msg.Reader()
		if err != nil {
			return 0, err
		}
		s.r, s.off = r, 0
		s.mu.Lock()
		s.err = nil
		s.mu.Unlock()
		return 0, nil
	}
	return 0, errors.New("queue: the received message can only be read again from its start")
}

func (s *sourceReader) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
