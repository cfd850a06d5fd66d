package admin

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A history search with a filter (part of an address or subject, a
// state, an account) can read every record of its time range when few
// match, and holds one of the store's connections (SQLite's readers,
// PostgreSQL's pool) while it does: deliveries need them too. So the
// console runs at most maxSearches at once, each under a deadline, and
// such a search covers the last defaultSearchWindow unless it says
// otherwise (README "Operator console", params.go).
const (
	maxSearches = 2
	// searchSlotWait is how long a search waits for a slot before it is
	// refused: long enough to ride out a short search, short enough that
	// nothing queues up behind a slow one.
	searchSlotWait = time.Second
	// searchRetryAfter is what a refused search is told to wait.
	searchRetryAfter = 5 * time.Second
	// DefaultSearchTimeout bounds each search unless
	// Options.SearchTimeout says otherwise.
	DefaultSearchTimeout = 10 * time.Second
)

var (
	// errSearchBusy: every slot was taken for searchSlotWait.
	errSearchBusy = errors.New("history searches are running already")
	// errSearchTimeout: the search reached its deadline and was stopped.
	errSearchTimeout = errors.New("history search stopped at its deadline")
)

// searchLimiter holds the search slots of a Server.
type searchLimiter struct {
	slots   chan struct{}
	timeout time.Duration
}

func newSearchLimiter(timeout time.Duration) *searchLimiter {
	if timeout <= 0 {
		timeout = DefaultSearchTimeout
	}
	return &searchLimiter{slots: make(chan struct{}, maxSearches), timeout: timeout}
}

// run runs search in a slot under the deadline, with a context that also
// ends with the request's (ctx): the store stops reading as soon as
// either ends. The error wraps errSearchBusy or errSearchTimeout, or is
// the search's.
func (l *searchLimiter) run(ctx context.Context, search func(context.Context) error) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-l.slots }()
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	err := search(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s (%v)", errSearchTimeout, l.timeout, err)
	}
	return err
}

func (l *searchLimiter) acquire(ctx context.Context) error {
	wait := time.NewTimer(searchSlotWait)
	defer wait.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-wait.C:
		return errSearchBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}
