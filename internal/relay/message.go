package relay

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/sendas"
	"github.com/oauthrelay/oauthrelay/internal/spool"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// message holds one message while it is relayed: in memory within the
// relay's budget for message bytes, beyond it in an encrypted temporary
// file (see package spool).
type message struct {
	*spool.Message
}

func newMessage(b *spool.Budget) *message { return &message{b.New()} }

// WriteString adds the relay's own text (the Received header).
func (m *message) WriteString(s string) error {
	_, err := m.Write([]byte(s))
	return err
}

// receivedHeader is the trace header RFC 5321 §4.4 requires of a relaying
// server: who handed the message over (the EHLO name and, unless
// server { received_hide_client } is set, the address), which server took
// it, with which protocol (RFC 3848: ESMTPA/ESMTPSA for authenticated
// submission) and when. It names no credential.
func (s *Session) receivedHeader(tx *transaction) string {
	helo := headerToken(s.conn.Hostname())
	from := helo
	if !tx.st.HideClientAddress {
		from = fmt.Sprintf("%s ([%s])", helo, s.remoteIP())
	}
	proto := "ESMTPA"
	if s.tlsActive() {
		proto = "ESMTPSA"
	}
	return fmt.Sprintf("Received: from %s\r\n\tby %s (oauthrelay) with %s id %s;\r\n\t%s\r\n",
		from, headerToken(tx.st.Hostname), proto, tx.id, time.Now().Format(time.RFC1123Z))
}

// headerToken makes client-supplied text (the EHLO name) safe inside a
// header: printable ASCII without spaces, bounded.
func headerToken(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '(' || r == ')' || r == ';' {
			return -1
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:255]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// receiveSendAs reads the message of a send_as client, rewritten so that
// it is from the account (package sendas), and logs both senders.
func receiveSendAs(tx *transaction, msg *message, r io.Reader) error {
	res, err := rewriteSendAs(msg, r, tx.account.Address)
	if err != nil {
		return err
	}
	header := "none"
	if len(res.Original) > 0 {
		header = printable(strings.Join(res.Original, ", "))
	}
	tx.log.Info("message rewritten to be sent as the client's send_as account",
		"mail_from", printable(tx.mailFrom), "header_from", header, "send_as", tx.account.Address,
		"reply_to_added", res.ReplyTo, "from_added", res.FromAdded, "fields_removed", res.Removed)
	return nil
}

// sink is where a message is written: a spool.Message.
type sink interface {
	io.Writer
	io.ReaderFrom
}

// rewriteSendAs copies a message from r to dst with its header section
// rewritten for account. The header section is read with a bounded reader
// (transport.MaxHeader); the rest is streamed as it comes, never held
// whole for the rewrite. A header section that cannot be rewritten safely
// is refused: errHeaderTooLarge when it goes on past the bound,
// errHeaderMalformed when it has a bare CR or NUL.
func rewriteSendAs(dst sink, r io.Reader, account string) (sendas.Result, error) {
	br := bufio.NewReader(r)
	head, _, err := transport.ReadHeader(br, transport.MaxHeader)
	if err != nil {
		return sendas.Result{}, err
	}
	atEOF := false
	if _, err := br.Peek(1); err == io.EOF {
		atEOF = true
	} else if err != nil {
		return sendas.Result{}, err
	}
	out, res, ok := sendas.Rewrite(head, atEOF, account)
	switch {
	case !ok && sendas.Malformed(head, atEOF):
		return sendas.Result{}, errHeaderMalformed
	case !ok:
		return sendas.Result{}, errHeaderTooLarge
	}
	if _, err := dst.Write(out); err != nil {
		return sendas.Result{}, err
	}
	if _, err := dst.ReadFrom(br); err != nil {
		return sendas.Result{}, err
	}
	return res, nil
}
