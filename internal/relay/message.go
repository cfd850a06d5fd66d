package relay

import (
	"fmt"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/spool"
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
