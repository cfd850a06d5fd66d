package httpsend

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Mailbox is the sending mailbox of an HTTP transport and what it sends
// with; the Graph and Gmail API transports embed it.
type Mailbox struct {
	// Account is the sending mailbox (the {address} of the requests).
	Account string
	// Member names the mailbox in the provider circuit's count of failing
	// mailboxes (default: Account); the mailboxes of a domain-wide
	// account share one name, so that senders a client makes up cannot
	// open the provider's circuit for every mailbox.
	Member string
	// BaseURL replaces the API's default endpoint (national clouds, the
	// sandbox, a proxy).
	BaseURL string
	Tokens  TokenSource
	// HTTP sends the requests; nil uses the transport's default client.
	HTTP *http.Client
	// Limits are the account's sending limits (nil: none).
	Limits limits.Limiter
	// Circuit guards the account, ProviderCircuit the API (shared by its
	// accounts); nil disables one.
	Circuit, ProviderCircuit *limits.Circuit
	Log                      hclog.Logger
	// Shared, when several instances share one database, caps the
	// mailbox's requests across all of them (limits.ConnSlots); nil: the
	// process's slots alone.
	Shared Gate
}

// Gate hands out request slots beyond this process: a slot's release, or
// limits.ErrSlotsBusy, or ctx's error when the caller gave up.
type Gate interface {
	TryAcquire(ctx context.Context) (release func(), err error)
}

// sharedPoll is how often a request waiting for a slot that other
// instances hold asks again: they free slots without telling this one.
const sharedPoll = 50 * time.Millisecond

// Acquire waits for one of the mailbox's request slots: one of the
// process's slots and, with Shared, one of every instance's. release is
// safe to call more than once.
func (m *Mailbox) Acquire(ctx context.Context, slots *Slots) (release func(), err error) {
	local, err := slots.Acquire(ctx, m.Account)
	if err != nil || m.Shared == nil {
		return local, err
	}
	for {
		shared, err := m.Shared.TryAcquire(ctx)
		if err == nil {
			return func() { shared(); local() }, nil
		}
		if !errors.Is(err, limits.ErrSlotsBusy) {
			local()
			return nil, err
		}
		t := time.NewTimer(sharedPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			local()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Begin starts a delivery of env through the API named provider (in
// replies and log lines): see Delivery.Start for what it checks.
func (m *Mailbox) Begin(ctx context.Context, env transport.Envelope, provider string, max int64, tooLarge *smtp.SMTPError) (*Delivery, error) {
	log := m.Logger().With("msgid", env.ID, "account", m.Account)
	d := &Delivery{Env: env, Tokens: m.Tokens, Log: log, Provider: provider,
		Adm: &Admission{Account: m.Account, Member: m.Member, Provider: provider, Limits: m.Limits, Circuit: m.Circuit, ProviderCircuit: m.ProviderCircuit, Log: log}}
	if err := d.Start(ctx, max, tooLarge); err != nil {
		return nil, err
	}
	return d, nil
}

// Logger returns Log, or a logger that discards.
func (m *Mailbox) Logger() hclog.Logger {
	if m.Log == nil {
		return hclog.NewNullLogger()
	}
	return m.Log
}

// Client returns HTTP, or def.
func (m *Mailbox) Client(def *http.Client) *http.Client {
	if m.HTTP == nil {
		return def
	}
	return m.HTTP
}

// URL returns BaseURL, or def.
func (m *Mailbox) URL(def string) string {
	if m.BaseURL == "" {
		return def
	}
	return m.BaseURL
}

// CheckMessage is what an HTTP transport posts to check an account
// without sending (`oauthrelay account test`): it names no recipient, so
// the API checks the token, the permission and the mailbox, then refuses
// it (Graph: ErrorInvalidRecipients; Gmail: "Recipient address required").
const CheckMessage = "Subject: oauthrelay account test (not sent: no recipients)\r\n\r\nThis message names no recipient and cannot be sent.\r\n"
