package limits

import (
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
)

// ErrCircuitOpen is returned while a circuit is open (or half-open and
// already probing).
var ErrCircuitOpen = errors.New("circuit open")

// errFailed marks a failed outcome for the breaker.
var errFailed = errors.New("failed")

// Breaker opens after a run of consecutive failures, rejects work at once
// while open, and lets a few probes through after OpenTimeout (half-open);
// a successful probe closes it again.
type Breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// NewBreaker returns a breaker named for logs and metrics. onChange, if
// set, is told about every state change.
func NewBreaker(name string, failures int, openTimeout time.Duration, onChange func(name, from, to string)) *Breaker {
	if failures < 1 {
		failures = 1
	}
	return &Breaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     openTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(failures) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			if onChange != nil {
				onChange(name, from.String(), to.String())
			}
		},
	})}
}

// Allow admits one piece of work; report its outcome with done(ok).
func (b *Breaker) Allow() (done func(ok bool), err error) {
	d, err := b.cb.Allow()
	if err != nil {
		return nil, ErrCircuitOpen
	}
	return func(ok bool) {
		if ok {
			d(nil)
		} else {
			d(errFailed)
		}
	}, nil
}

// State is "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }

// StateValue is the state as a number for metrics: 0 closed, 1 half-open,
// 2 open.
func (b *Breaker) StateValue() float64 {
	switch b.cb.State() {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}
