package graph

import (
	"context"
	"strings"
	"sync"
)

// maxConcurrentPerMailbox is Graph's limit of concurrent requests per
// mailbox (Microsoft Graph throttling limits, Outlook service: 4); the
// next request gets 429.
const maxConcurrentPerMailbox = 4

// mailboxSlots bounds the requests in flight per mailbox. One is shared
// by every Transport of the process, so that a reload (a new Transport for
// the same account) cannot raise the concurrency. Its map holds one
// channel per configured mailbox and is never pruned.
type mailboxSlots struct {
	size int

	mu  sync.Mutex
	sem map[string]chan struct{}
}

var processSlots = &mailboxSlots{size: maxConcurrentPerMailbox}

// maxLargePerMailbox bounds the draft-and-upload sequences of a mailbox
// in flight: each holds one request slot for minutes, so at most half
// of them go to large messages.
const maxLargePerMailbox = maxConcurrentPerMailbox / 2

// largeSlots is taken before processSlots by a large message's sequence.
var largeSlots = &mailboxSlots{size: maxLargePerMailbox}

// acquire waits for one of the mailbox's slots, or for ctx.
func (s *mailboxSlots) acquire(ctx context.Context, mailbox string) (release func(), err error) {
	sem := s.semaphore(strings.ToLower(mailbox))
	select {
	case sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-sem }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *mailboxSlots) semaphore(mailbox string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sem == nil {
		s.sem = map[string]chan struct{}{}
	}
	sem, ok := s.sem[mailbox]
	if !ok {
		sem = make(chan struct{}, s.size)
		s.sem[mailbox] = sem
	}
	return sem
}
