// Package rcptfit fits a message's recipient header fields to its SMTP
// envelope, for providers that take no envelope (README "Envelope
// fidelity").
//
// SMTP delivers to the envelope (RCPT TO); Microsoft Graph's sendMail and
// the Gmail API have no envelope and send a copy to every address in the
// To, Cc and Bcc header fields. The relay's promise is the SMTP one:
// every envelope recipient gets exactly one copy and nobody else gets any. Before sending, the header section
// is adjusted (everything after it is passed on byte for byte):
//
//   - Every Bcc field is removed: it is the client's record of blind
//     recipients (RFC 5322 §3.6.3), and the envelope is the authority on
//     who receives this copy.
//   - Envelope recipients that To and Cc do not name are listed in one new
//     Bcc field at the end of the header section. Exchange and Gmail
//     remove Bcc from the copies they deliver, so they stay blind.
//   - To and Cc fields that name only envelope recipients are kept byte
//     for byte. A field that names an address outside the envelope is
//     rewritten without it (and removed when nothing is left); repeated
//     To or Cc fields (RFC 5322 §3.6 allows one each) are merged into one.
//
// Addresses outside the envelope appear in To or Cc when a client sends a
// blind copy as a separate transaction (the same header, one Bcc recipient
// in the envelope), or when the queue retries only the recipients that
// failed. The provider would send those header recipients another copy,
// so the relay must either refuse such messages or rewrite the field. Refusing
// would make the queue's partial retries and Bcc-splitting clients fail
// for good; rewriting delivers exactly to the envelope at a cost: the
// recipients of such a copy see a shorter To or Cc list than the sender
// wrote, and a DKIM signature that covers To or Cc no longer verifies
// (providers sign after submission, so this matters only for clients that
// sign themselves). The relay logs how many header recipients it removed.
//
// A header section the relay cannot read with certainty (longer than
// transport.MaxHeader, or a To or Cc field that does not parse as an
// address list) is refused permanently (554 5.6.0): the relay cannot tell
// whom the provider would send it to.
package rcptfit
