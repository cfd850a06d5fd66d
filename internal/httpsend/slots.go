package httpsend

import (
	"context"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Slots bounds the requests in flight per mailbox. A transport keeps one
// in a package variable, shared by every Transport of the process, so
// that a reload (a new Transport for the same account) cannot raise the
// concurrency. Its map holds one channel per mailbox used and is never
// pruned: mailboxes are configured accounts.
type Slots struct {
	size int

	mu  sync.Mutex
	sem map[string]chan struct{}
}

// NewSlots returns slots for at most size requests per mailbox.
func NewSlots(size int) *Slots {
	return &Slots{size: max(size, 1), sem: map[string]chan struct{}{}}
}

// Acquire waits for one of the mailbox's slots (mailbox is compared
// without case), or for ctx. release is safe to call more than once.
func (s *Slots) Acquire(ctx context.Context, mailbox string) (release func(), err error) {
	sem := s.semaphore(strings.ToLower(mailbox))
	select {
	case sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-sem }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Slots) semaphore(mailbox string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	sem, ok := s.sem[mailbox]
	if !ok {
		sem = make(chan struct{}, s.size)
		s.sem[mailbox] = sem
	}
	return sem
}

// Busy is the failure of a delivery that gave up waiting for a slot: the
// provider was not contacted, so it counts for no circuit.
func Busy(provider string, err error) *Failure {
	return &Failure{Err: &transport.Error{Kind: transport.KindBusy, Err: err, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Every request slot of this mailbox at " + provider + " is in use; try again later"}}}
}
