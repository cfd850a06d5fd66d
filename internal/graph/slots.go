package graph

import "github.com/oauthrelay/oauthrelay/internal/httpsend"

// providerName names Graph in replies and log lines.
const providerName = "Microsoft Graph"

// maxConcurrentPerMailbox is Graph's limit of concurrent requests per
// mailbox (Microsoft Graph throttling limits, Outlook service: 4); the
// next request gets 429.
const maxConcurrentPerMailbox = 4

// RequestsPerMailbox is how many requests of a mailbox may be in flight
// across all the relay's instances.
const RequestsPerMailbox = maxConcurrentPerMailbox

// processSlots bounds the requests in flight per mailbox, for every
// Transport of the process, so that a reload (a new Transport for the
// same account) cannot raise the concurrency.
var processSlots = httpsend.NewSlots(maxConcurrentPerMailbox)

// maxLargePerMailbox bounds the draft-and-upload sequences of a mailbox
// in flight: each holds one request slot for minutes, so at most half
// of them go to large messages.
const maxLargePerMailbox = maxConcurrentPerMailbox / 2

// largeSlots is taken before processSlots by a large message's sequence.
var largeSlots = httpsend.NewSlots(maxLargePerMailbox)
