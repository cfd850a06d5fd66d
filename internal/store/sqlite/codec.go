package sqlite

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// unixNano is how times are stored: Unix nanoseconds, 0 for the zero
// time, clamped to the range an int64 holds (years 1678 to 2262).
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// fromUnixNano reverses unixNano.
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// encodeStrings stores a list of strings (MAIL parameters, history
// recipients) as a JSON array; nil is stored as [].
func encodeStrings(list []string) string {
	if list == nil {
		list = []string{}
	}
	b, _ := json.Marshal(list) // a []string always marshals
	return string(b)
}

// decodeStrings reverses encodeStrings; an empty list is nil.
func decodeStrings(text string) ([]string, error) {
	var list []string
	if err := json.Unmarshal([]byte(text), &list); err != nil {
		return nil, fmt.Errorf("store: stored list: %w", err)
	}
	if len(list) == 0 {
		return nil, nil
	}
	return list, nil
}

// envelopeColumns are the columns scanEnvelope reads, in its order.
const envelopeColumns = `id, account, listener, client, mail_from, mail_params, rcpts,
	size, header_id, received, expires, next_attempt, attempts, last_reply, state, bounce`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanEnvelope reads envelopeColumns, then extra destinations.
func scanEnvelope(sc scanner, extra ...any) (*store.Envelope, error) {
	var (
		e                                        store.Envelope
		params, rcpts                            string
		received, expires, nextAttempt, attempts int64
	)
	dest := []any{&e.ID, &e.Account, &e.Listener, &e.Client, &e.From, &params, &rcpts,
		&e.Size, &e.HeaderID, &received, &expires, &nextAttempt, &attempts, &e.LastReply, &e.State, &e.Bounce}
	if err := sc.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	var err error
	if e.MailParams, err = decodeStrings(params); err != nil {
		return nil, err
	}
	if e.Rcpts, err = engine.DecodeRcpts(rcpts); err != nil {
		return nil, err
	}
	e.Received, e.Expires, e.NextAttempt = fromUnixNano(received), fromUnixNano(expires), fromUnixNano(nextAttempt)
	e.Attempts = int(attempts)
	return &e, nil
}
