// Package gmailapi delivers messages through the Gmail API's
// users.messages.send (POST /upload/gmail/v1/users/{address}/messages/send
// with uploadType=media and the message as message/rfc822), implementing
// the delivery contract of package transport. Recipients are checked
// locally at AddRcpt; the message is sent at Body, in one request whose
// body is streamed from the received message with an exact
// Content-Length, never buffered whole.
//
// # Envelope fidelity
//
// Gmail sends to the To, Cc and Bcc header fields, not to an envelope;
// the header section is fitted to the envelope first (package rcptfit
// says how). Gmail removes Bcc from the copies it delivers, so blind
// recipients stay blind.
//
// # What the Gmail API cannot carry
//
// It takes no envelope, so the reverse-path is not passed on: Gmail sends
// from the account, bounces go to it, and a From that is neither the
// account nor one of its send-as aliases is replaced by the account's
// address. It has no DSN (RFC 3461): RET and ENVID are dropped as a relay
// to a server without DSN does (§5.2.2), and a NOTIFY that asks for more
// than failure notices is refused at RCPT (555 5.3.3) unless the caller
// sends its own notices (the queue), as package upstream does for an SMTP
// provider without DSN.
//
// # Limits
//
// A message may have up to 35 MB (MaxMessageBytes): a declared SIZE over
// it is refused at MAIL, a larger message at DATA (552 5.3.4). At most 2
// sends per mailbox are in flight from this process (see
// maxConcurrentPerMailbox); further sends wait for a slot.
//
// # Errors
//
// A refused token (401) is refreshed and the request made once more.
// Missing scopes (insufficientPermissions), a domain policy against the
// app (domainPolicy) or a token of another user (403) are 550 5.7.1 with
// advice in the log; the queue defers them, as for any credential
// problem. A message Gmail refuses (400: invalidArgument, badRequest) is
// 554 5.6.0. Throttling (429 rateLimitExceeded, userRateLimitExceeded) and
// Google's failures (5xx, backendError) are 451 4.4.5 with RetryAt from
// Retry-After, else 30 seconds on. A used-up daily quota (the user's
// sending limit, "(Mail sending)", or the project's dailyLimitExceeded) is
// 451 4.4.5 with RetryAt at Google's "Retry after" time, else the next
// midnight Pacific Time, when Google's daily quotas reset. Google warns
// that its sending pipeline may accept messages for some minutes after
// the sending limit was reached; those are lost to Gmail, not to the
// relay, which the account's daily_message_limit is there to prevent.
// A request that got no answer is temporary when it was not written
// whole, ambiguous (451 4.4.2, possibly delivered) when it was, as in
// package graph (see package httpsend).
package gmailapi
