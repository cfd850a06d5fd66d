package relay

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// transaction is one MAIL...DATA exchange of a client session, delivered
// through a transport (the account's own for direct delivery, the queue
// for `delivery = "queue"`).
type transaction struct {
	st      *State // the configuration the transaction runs with (held)
	id      string
	client  string // the client's name
	account *Account
	from    string // the sender as an SMTP path
	// sendAs: the client's send_as account sends the message, whose From
	// is rewritten; mailFrom is the client's own MAIL FROM, in angle brackets.
	sendAs   bool
	mailFrom string
	// utf8: MAIL carried SMTPUTF8, so addresses may be UTF-8 (RFC 6531).
	utf8    bool
	rcpts   []string
	log     hclog.Logger
	started time.Time
	d       transport.Delivery
}

// release ends the delivery (a no-op after Body) and lets go of the
// configuration it ran with.
func (tx *transaction) release() {
	tx.d.Abort()
	tx.st.release()
}
