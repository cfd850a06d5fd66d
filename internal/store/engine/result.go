package engine

import (
	"fmt"
	"sort"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// ApplyResult applies res to e (its recipients, attempts and last reply
// as stored) and returns the events that record it: one per recipient the
// attempt reports on (delivered, bounced or attempt), in envelope order,
// else one for the whole message; EventDeferred first for an attempt that
// did not count. A result naming a recipient e lacks is refused.
func ApplyResult(e *store.Envelope, res *store.Result) ([]*store.Event, error) {
	var events []*store.Event
	if !res.Counted {
		events = append(events, &store.Event{ID: e.ID, At: res.At, Type: store.EventDeferred, Reply: res.Reply})
	}
	matched := map[string]bool{}
	for i := range e.Rcpts {
		r := &e.Rcpts[i]
		got, ok := res.Rcpts[r.Addr]
		if !ok {
			continue
		}
		if err := normalizeRcptState(&got.State); err != nil {
			return nil, fmt.Errorf("store: finish %s: %w", e.ID, err)
		}
		r.State, r.LastReply = got.State, got.LastReply
		matched[r.Addr] = true
		events = append(events, &store.Event{ID: e.ID, At: res.At, Type: rcptEvent(r.State), Rcpt: r.Addr, Reply: r.LastReply})
	}
	if len(matched) != len(res.Rcpts) {
		return nil, fmt.Errorf("store: finish %s: the result names a recipient the message does not have", e.ID)
	}
	if res.Counted {
		e.Attempts++
		if len(matched) == 0 {
			events = append(events, &store.Event{ID: e.ID, At: res.At, Type: store.EventAttempt, Reply: res.Reply})
		}
	}
	if res.Reply != "" {
		e.LastReply = res.Reply
	}
	return events, nil
}

// rcptEvent is the event type recording a recipient's new state.
func rcptEvent(state string) string {
	switch state {
	case store.RcptDelivered:
		return store.EventDelivered
	case store.RcptFailed:
		return store.EventBounced
	}
	return store.EventAttempt
}

// FinalState is the state of a message none of whose recipients is
// pending: delivered when none failed, else bounced.
func FinalState(rcpts []store.Recipient) string {
	for _, r := range rcpts {
		if r.State == store.RcptFailed {
			return store.StateBounced
		}
	}
	return store.StateDelivered
}

// SortClaimed orders claims as Claim promises: oldest next attempt first,
// then oldest received, then by ID.
func SortClaimed(c []*store.Claimed) {
	sort.Slice(c, func(i, j int) bool {
		a, b := c[i], c[j]
		if !a.NextAttempt.Equal(b.NextAttempt) {
			return a.NextAttempt.Before(b.NextAttempt)
		}
		if !a.Received.Equal(b.Received) {
			return a.Received.Before(b.Received)
		}
		return a.ID < b.ID
	})
}
