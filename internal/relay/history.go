package relay

import (
	"bufio"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// History keeps the delivery history of directly delivered messages. It
// must not block the session: an implementation buffers and writes in
// batches, and may drop (and count) entries when the store falls behind.
type History interface {
	Record(rec *store.Record, events ...*store.Event)
	// Subjects reports whether records carry the message's Subject
	// (store { history_subjects }). It is asked per message, so that a
	// reload applies at once.
	Subjects() bool
}

// history records a direct-mode message's trail: accepted, the provider's
// answer, and its final state. reply is nil when the provider accepted it
// (text is then its reply).
func (s *Session) history(tx *transaction, msg *message, reply *smtp.SMTPError, text string) {
	h := s.b.lis.History
	if h == nil {
		return
	}
	now := time.Now()
	mode := "direct"
	if s.b.lis.Queue != nil {
		mode = "queue" // refused before it could be stored
	}
	headerID, subject := headerFacts(msg, h.Subjects())
	rec := &store.Record{
		ID: tx.id, Mode: mode, Listener: s.b.lis.Name, Client: tx.client, Account: tx.account.Address,
		From: tx.from, Rcpts: tx.rcpts, Size: msg.Size(), HeaderID: headerID, Subject: subject,
		Received: tx.started, Updated: now,
	}
	events := []*store.Event{{ID: tx.id, At: tx.started, Type: store.EventAccepted}}
	if reply == nil {
		rec.State = store.StateSent
		events = append(events, &store.Event{ID: tx.id, At: now, Type: store.EventDelivered, Reply: printable(text)})
	} else {
		rec.State = store.StateRefused
		events = append(events, &store.Event{ID: tx.id, At: now, Type: store.EventRefused, Reply: transport.ReplyText(reply)})
	}
	h.Record(rec, events...)
}

// headerFacts returns the message's Message-ID (RFC 5322 §3.6.4) and,
// when withSubject, its decoded Subject, read the same way as the queue
// reads them, from one read of the header section's first
// transport.MaxHeader bytes; "" for what it lacks.
func headerFacts(msg transport.Message, withSubject bool) (headerID, subject string) {
	r, err := msg.Reader()
	if err != nil {
		return "", ""
	}
	_, header, _ := transport.ReadHeader(bufio.NewReader(r), transport.MaxHeader)
	if withSubject {
		subject = transport.Subject(header)
	}
	return transport.MessageID(header), subject
}
