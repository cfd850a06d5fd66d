package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// NormalizeNew checks a new message and returns its envelope with the
// defaults filled in: state queued, recipients pending, received now.
func NormalizeNew(m *store.NewMessage) (store.Envelope, error) {
	if m == nil {
		return store.Envelope{}, errors.New("store: enqueue: nil message")
	}
	e := m.Envelope
	e.Rcpts = append([]store.Recipient(nil), e.Rcpts...)
	switch {
	case e.ID == "":
		return e, errors.New("store: enqueue: message without an ID")
	case e.From == "":
		return e, fmt.Errorf("store: enqueue %s: empty reverse-path", e.ID)
	case len(e.Rcpts) == 0:
		return e, fmt.Errorf("store: enqueue %s: no recipients", e.ID)
	}
	if e.State == "" {
		e.State = store.StateQueued
	}
	if e.State != store.StateQueued && e.State != store.StateHeld {
		return e, fmt.Errorf("store: enqueue %s: state %q is not queued or held", e.ID, e.State)
	}
	if m.LeaseOwner != "" && (m.LeaseUntil.IsZero() || e.State != store.StateQueued) {
		return e, fmt.Errorf("store: enqueue %s: a lease needs an end and a queued message", e.ID)
	}
	for i := range e.Rcpts {
		if err := normalizeRcpt(&e.Rcpts[i]); err != nil {
			return e, fmt.Errorf("store: enqueue %s: %w", e.ID, err)
		}
	}
	if e.Received.IsZero() {
		e.Received = time.Now()
	}
	return e, nil
}

func normalizeRcpt(r *store.Recipient) error {
	if r.Addr == "" {
		return errors.New("empty recipient")
	}
	return normalizeRcptState(&r.State)
}

// normalizeRcptState checks a recipient state; "" means pending.
func normalizeRcptState(state *string) error {
	switch *state {
	case "":
		*state = store.RcptPending
	case store.RcptPending, store.RcptDelivered, store.RcptFailed:
	default:
		return fmt.Errorf("recipient state %q", *state)
	}
	return nil
}

// QueueRecord is the history record of a message entering the queue;
// subject is NewMessage.Subject.
func QueueRecord(e *store.Envelope, subject string) *store.Record {
	addrs := make([]string, len(e.Rcpts))
	for i, r := range e.Rcpts {
		addrs[i] = r.Addr
	}
	return &store.Record{
		ID: e.ID, Mode: "queue", Listener: e.Listener, Client: e.Client, Account: e.Account,
		From: e.From, Rcpts: addrs, Size: e.Size, HeaderID: e.HeaderID, Subject: subject,
		Received: e.Received, State: e.State, Updated: e.Received,
	}
}

// NormalizeHistory checks records and events for Record and returns
// copies with the missing times set to now.
func NormalizeHistory(recs []*store.Record, events []*store.Event, now time.Time) ([]*store.Record, []*store.Event, error) {
	outRecs := make([]*store.Record, len(recs))
	for i, r := range recs {
		if r == nil || r.ID == "" || r.State == "" {
			return nil, nil, errors.New("store: record: a record needs an ID and a state")
		}
		c := *r
		if c.Updated.IsZero() {
			c.Updated = now
		}
		outRecs[i] = &c
	}
	outEvents := make([]*store.Event, len(events))
	for i, e := range events {
		if e == nil || e.ID == "" || e.Type == "" {
			return nil, nil, errors.New("store: record: an event needs an ID and a type")
		}
		c := *e
		if c.At.IsZero() {
			c.At = now
		}
		outEvents[i] = &c
	}
	return outRecs, outEvents, nil
}
