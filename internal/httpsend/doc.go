// Package httpsend is what the transports that deliver through an HTTP
// mail API (packages graph and gmailapi) share: they check recipients
// locally and send the whole message in one request at Body, so their
// admission, failure handling and request machinery are the same.
//
//   - Admission: a delivery's passage through the account's and the
//     provider's circuits and its share of the account's limits (a
//     reservation, README "Protection"), what each attempt tells the
//     circuits, and the operator's log line for a failure.
//   - Failure: a classified failure (the contract's *transport.Error) with
//     its outcomes for the circuits and advice for the operator; the
//     relay's own refusals, token and limit failures.
//   - Do: one request, traced so that a request that got no answer is
//     classified by how far it got: not connected (the provider saw
//     nothing), not written whole (it cannot have sent the message), or
//     written whole (it may have: ambiguous, README "Upstream connections
//     and retries").
//   - SendWithToken: a request with the account's access token, repeated
//     once with a fresh token when the provider refused it.
//   - Slots: a process-wide bound on the requests in flight per mailbox.
//   - RetryAfter: the Retry-After header (RFC 9110 §10.2.3).
package httpsend
