// Package graph delivers messages through Microsoft Graph's sendMail
// (POST /v1.0/users/{mailbox}/sendMail with the MIME message in base64,
// Content-Type text/plain), implementing the delivery contract of package
// transport. Recipients are checked locally at AddRcpt; the message is
// sent at Body, in one request.
//
// # Envelope fidelity
//
// Graph sends to the To, Cc and Bcc header fields, not to an envelope;
// the header section is fitted to the envelope first (package rcptfit
// says how).
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
