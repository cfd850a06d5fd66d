package admin

import "time"

// TEMPORARY: the old behaviour behind the new names, for the red run.

func (t *throttle) blocked(client string, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.clients[client]
	if e == nil || e.Value.(*failures).n < failLimit {
		return false, 0
	}
	left := e.Value.(*failures).start.Add(failWindow).Sub(now)
	return left > 0, left
}


func failedTokenID(h tokenHash) string { return h.id() }

var failureKey [32]byte

const DefaultSearchTimeout = 10 * time.Second

const maxSearches = 2
