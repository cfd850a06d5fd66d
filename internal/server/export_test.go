package server

import (
	"testing"
	"time"
)

// SetHistoryPruneInterval makes the relays the test creates prune their
// delivery history every d instead of hourly (after the pass at start),
// so that pruning while running can be awaited. Tests that call it must
// not run in parallel with others of this package.
func SetHistoryPruneInterval(t testing.TB, d time.Duration) {
	t.Helper()
	old := historyPruneEvery
	historyPruneEvery = d
	t.Cleanup(func() { historyPruneEvery = old })
}
