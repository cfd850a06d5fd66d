// Package engine is what the store engines (store/sqlite and
// store/postgres) share beyond the store.Store contract, so that both
// store the same things the same way: the checks of new messages and
// history, the bookkeeping of a delivery result, body chunks and their
// encryption at rest, the stored form of recipients, the history search's
// bounds and patterns, and the list of embedded schema migrations. It
// holds no SQL.
package engine

import "errors"

// ErrDuplicate: an Enqueue with the ID of a message (or history record)
// already stored.
var ErrDuplicate = errors.New("store: a message with this ID exists")
