package postgres

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// PostgreSQL's text holds valid UTF-8 without NUL bytes, where SQLite
// stores any bytes. What identifies a message (addresses, IDs, names) is
// refused when it is not such text: changing it would change where the
// message goes. Free text from outside (a Message-ID header, a provider's
// reply) is made such text instead: a reply with a stray byte must not
// stop its result from being recorded.

// validText reports whether PostgreSQL stores s as it is.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// cleanText makes s text PostgreSQL stores: invalid bytes become U+FFFD
// and NUL bytes are left out.
func cleanText(s string) string {
	if validText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// checkEnvelope refuses an envelope whose identifying fields are not
// valid text and cleans its free text.
func checkEnvelope(e *store.Envelope) error {
	fields := []string{e.ID, e.Account, e.Listener, e.Client, e.From}
	fields = append(fields, e.MailParams...)
	for i := range e.Rcpts {
		r := &e.Rcpts[i]
		fields = append(fields, r.Addr, r.Notify, r.ORcpt)
		r.LastReply = cleanText(r.LastReply)
	}
	for _, f := range fields {
		if !validText(f) {
			return fmt.Errorf("store: enqueue %q: the envelope holds bytes that are not UTF-8 text", e.ID)
		}
	}
	e.HeaderID, e.LastReply = cleanText(e.HeaderID), cleanText(e.LastReply)
	return nil
}

// cleanRecord cleans every text field of a history record (history is
// for reading: a stray byte is better replaced than the record lost).
func cleanRecord(r *store.Record) {
	for _, f := range []*string{&r.ID, &r.Mode, &r.Listener, &r.Client, &r.Account, &r.From, &r.HeaderID, &r.Subject, &r.State} {
		*f = cleanText(*f)
	}
	for i, a := range r.Rcpts {
		if !validText(a) {
			r.Rcpts = slices.Clone(r.Rcpts) // the caller's
			r.Rcpts[i] = cleanText(a)
		}
	}
}

// cleanEvent cleans every text field of an event.
func cleanEvent(e *store.Event) {
	for _, f := range []*string{&e.ID, &e.Type, &e.Rcpt, &e.Reply} {
		*f = cleanText(*f)
	}
}
