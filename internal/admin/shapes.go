package admin

import (
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// The JSON shapes below are those of `oauthrelay queue list -json` and
// `queue show -json`; the admin API answers with the same ones, so that
// scripts and operators see one vocabulary (README "The queue commands").

// QueueEntry is one queued message.
type QueueEntry struct {
	ID          string           `json:"id"`
	State       string           `json:"state"`
	Account     string           `json:"account"`
	From        string           `json:"from"`
	Size        int64            `json:"size"`
	Received    time.Time        `json:"received"`
	NextAttempt time.Time        `json:"next_attempt"`
	Expires     time.Time        `json:"expires"`
	Attempts    int              `json:"attempts"`
	LastReply   string           `json:"last_reply,omitempty"`
	Recipients  []QueueRecipient `json:"recipients"`
	MessageID   string           `json:"message_id,omitempty"`
	Listener    string           `json:"listener,omitempty"`
	Client      string           `json:"client,omitempty"`
	Bounce      bool             `json:"bounce,omitempty"`
	MailParams  []string         `json:"mail_params,omitempty"`
}

// QueueRecipient is one recipient of a queued message.
type QueueRecipient struct {
	Addr      string `json:"address"`
	State     string `json:"state"`
	LastReply string `json:"last_reply,omitempty"`
	Notify    string `json:"notify,omitempty"`
	ORcpt     string `json:"orcpt,omitempty"`
}

// EntryOf is the JSON shape of a queued message.
func EntryOf(e *store.Envelope) QueueEntry {
	rcpts := make([]QueueRecipient, len(e.Rcpts))
	for i, r := range e.Rcpts {
		rcpts[i] = QueueRecipient{Addr: r.Addr, State: r.State, LastReply: r.LastReply, Notify: r.Notify, ORcpt: r.ORcpt}
	}
	return QueueEntry{ID: e.ID, State: e.State, Account: e.Account, From: e.From, Size: e.Size, Received: e.Received,
		NextAttempt: e.NextAttempt, Expires: e.Expires, Attempts: e.Attempts, LastReply: e.LastReply, Recipients: rcpts,
		MessageID: e.HeaderID, Listener: e.Listener, Client: e.Client, Bounce: e.Bounce, MailParams: e.MailParams}
}

// HistoryEntry is a message's history record. Subject is empty, and left
// out, unless the store keeps subjects (history_subjects).
type HistoryEntry struct {
	ID         string    `json:"id"`
	Mode       string    `json:"mode"`
	State      string    `json:"state"`
	Listener   string    `json:"listener,omitempty"`
	Client     string    `json:"client,omitempty"`
	Account    string    `json:"account"`
	From       string    `json:"from"`
	Recipients []string  `json:"recipients"`
	Size       int64     `json:"size"`
	MessageID  string    `json:"message_id,omitempty"`
	Subject    string    `json:"subject,omitempty"`
	Received   time.Time `json:"received"`
	Updated    time.Time `json:"updated"`
}

// EventEntry is one step of a message's trail.
type EventEntry struct {
	At    time.Time `json:"at"`
	Type  string    `json:"type"`
	Rcpt  string    `json:"recipient,omitempty"`
	Reply string    `json:"reply,omitempty"`
}

// HistoryOf is the JSON shape of a history record (nil for nil).
func HistoryOf(r *store.Record) *HistoryEntry {
	if r == nil {
		return nil
	}
	return &HistoryEntry{ID: r.ID, Mode: r.Mode, State: r.State, Listener: r.Listener, Client: r.Client, Account: r.Account,
		From: r.From, Recipients: r.Rcpts, Size: r.Size, MessageID: r.HeaderID, Subject: r.Subject, Received: r.Received, Updated: r.Updated}
}

// EventsOf is the JSON shape of a trail.
func EventsOf(events []*store.Event) []EventEntry {
	out := make([]EventEntry, len(events))
	for i, e := range events {
		out[i] = EventEntry{At: e.At, Type: e.Type, Rcpt: e.Rcpt, Reply: e.Reply}
	}
	return out
}

// MessageView is one message as `queue show -json` and GET
// /api/v1/messages/{id} give it: its queue entry while it is queued, its
// history record and its trail.
type MessageView struct {
	ID      string        `json:"id"`
	Queue   *QueueEntry   `json:"queue"`
	History *HistoryEntry `json:"history"`
	Events  []EventEntry  `json:"events"`
}

// View is the JSON shape of m.
func (m *Message) View() MessageView {
	v := MessageView{ID: m.ID, History: HistoryOf(m.Record), Events: EventsOf(m.Events)}
	if m.Envelope != nil {
		e := EntryOf(m.Envelope)
		v.Queue = &e
	}
	return v
}
