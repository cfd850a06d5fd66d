// Package graph delivers messages through Microsoft Graph's sendMail
// (POST /v1.0/users/{mailbox}/sendMail with the MIME message in base64,
// Content-Type text/plain), implementing the delivery contract of package
// transport. Recipients are checked locally at AddRcpt; the message is
// sent at Body, in one request.
//
// # Envelope fidelity
//
// SMTP delivers to the envelope (RCPT TO); Graph has no envelope and
// sends a copy to every address in the To, Cc and Bcc header fields. The
// relay's promise is the SMTP one: every envelope recipient gets exactly
// one copy and nobody else gets any. Before sending, the header section
// is adjusted (everything after it is passed on byte for byte):
//
//   - Every Bcc field is removed: it is the client's record of blind
//     recipients (RFC 5322 §3.6.3), and the envelope is the authority on
//     who receives this copy.
//   - Envelope recipients that To and Cc do not name are listed in one new
//     Bcc field at the end of the header section. Exchange removes Bcc
//     from the copies it delivers, so they stay blind.
//   - To and Cc fields that name only envelope recipients are kept byte
//     for byte. A field that names an address outside the envelope is
//     rewritten without it (and removed when nothing is left); repeated
//     To or Cc fields (RFC 5322 §3.6 allows one each) are merged into one.
//
// Addresses outside the envelope appear in To or Cc when a client sends a
// blind copy as a separate transaction (the same header, one Bcc recipient
// in the envelope), or when the queue retries only the recipients that
// failed. Graph would send those header recipients another copy, so the
// relay must either refuse such messages or rewrite the field. Refusing
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
// whom Graph would send it to.
//
// # What Graph cannot carry
//
// Graph takes no envelope, so the reverse-path is not passed on: Exchange
// sends from the mailbox, and bounces go to it. Graph has no DSN (RFC
// 3461): RET and ENVID are dropped as a relay to a server without DSN
// does (§5.2.2), and a NOTIFY that asks for more than failure notices is
// refused at RCPT (555 5.3.3) unless the caller sends its own notices
// (the queue), as package upstream does for an SMTP provider without DSN.
//
// # Limits
//
// A request carries at most 4 MB of base64, so messages up to 3 MiB go
// out with sendMail. Larger messages need a draft and attachment upload
// sessions; until that exists they are refused with 552 5.3.4.
//
// At most 4 requests per mailbox are in flight from this process (Graph's
// mailbox concurrency limit); further sends wait for a slot.
package graph
