package limits

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is an account's sending limits as reservations: a message takes
// its share of every limit when it starts (Reserve, AddRcpt), so that
// concurrent sessions cannot overshoot a quota together, and gives it back
// when it is not sent (Cancel). The local implementation is
// *AccountLimits (process memory); a shared one keeps the counts in the
// store for several instances.
type Limiter interface {
	// Reserve takes one message's share now, or says which limit refuses
	// it and when to try again (*LimitError).
	Reserve(now time.Time) (Reservation, error)
	// Usage returns the share used of the daily quotas (0..1) by kind.
	Usage(now time.Time) map[string]float64
}

// Reservation is one message's share of an account's limits.
type Reservation interface {
	// AddRcpt takes one more recipient's share.
	AddRcpt(now time.Time) error
	// DropRcpt gives one recipient's share back (the provider refused
	// that recipient).
	DropRcpt()
	// Commit keeps the shares: the provider accepted the message.
	Commit()
	// Cancel gives every share back: the message was not sent.
	Cancel(now time.Time)
}

// Reserve implements Limiter.
func (a *AccountLimits) Reserve(now time.Time) (Reservation, error) {
	if a == nil {
		return noReservation{}, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dailyMsgs > 0 && a.msgs.sum(now) >= a.dailyMsgs {
		return nil, &LimitError{Kind: KindDailyMessages, Limit: a.dailyMsgs, RetryAt: a.msgs.nextExpiry(now)}
	}
	var rr *rate.Reservation
	if a.limiter != nil {
		rr = a.limiter.ReserveN(now, 1)
		if d := rr.DelayFrom(now); !rr.OK() || d > 0 {
			rr.CancelAt(now)
			return nil, &LimitError{Kind: KindRate, Limit: a.perMinute, RetryAt: now.Add(d)}
		}
	}
	a.msgs.add(now, 1)
	return &reservation{a: a, at: now, rate: rr}, nil
}

// reservation is a message's share of one *AccountLimits.
type reservation struct {
	a    *AccountLimits
	at   time.Time // the quarter-hour its counts went into
	rate *rate.Reservation

	mu    sync.Mutex
	rcpts int
	done  bool
}

func (r *reservation) AddRcpt(now time.Time) error {
	a := r.a
	r.mu.Lock()
	defer r.mu.Unlock()
	if a.maxRcpts > 0 && r.rcpts+1 > a.maxRcpts {
		return &LimitError{Kind: KindMessageRcpts, Limit: a.maxRcpts}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dailyRcpts > 0 && a.rcpts.sum(now)+1 > a.dailyRcpts {
		return &LimitError{Kind: KindDailyRcpts, Limit: a.dailyRcpts, RetryAt: a.rcpts.nextExpiry(now)}
	}
	a.rcpts.add(r.at, 1)
	r.rcpts++
	return nil
}

func (r *reservation) DropRcpt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || r.rcpts == 0 {
		return
	}
	r.rcpts--
	r.a.mu.Lock()
	r.a.rcpts.remove(r.at, 1)
	r.a.mu.Unlock()
}

func (r *reservation) Commit() {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
}

func (r *reservation) Cancel(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	a := r.a
	a.mu.Lock()
	a.msgs.remove(r.at, 1)
	a.rcpts.remove(r.at, r.rcpts)
	a.mu.Unlock()
	if r.rate != nil {
		r.rate.CancelAt(now)
	}
}

// noReservation is the reservation of an account without limits.
type noReservation struct{}

func (noReservation) AddRcpt(time.Time) error { return nil }
func (noReservation) DropRcpt()               {}
func (noReservation) Commit()                 {}
func (noReservation) Cancel(time.Time)        {}

// remove takes back n events counted at t, if t's quarter-hour is still
// in the window (older counts have left it anyway).
func (r *rolling) remove(t time.Time, n int) {
	if r.counts == nil || n == 0 {
		return
	}
	idx := t.UnixNano() / int64(bucketSpan)
	slot := int(idx % int64(buckets))
	if r.epoch[slot] == idx {
		r.counts[slot] = max(r.counts[slot]-int32(n), 0)
	}
}

// nextExpiry is when the oldest counted quarter-hour leaves the 24-hour
// window, freeing its share of the quota.
func (r *rolling) nextExpiry(now time.Time) time.Time {
	idx := now.UnixNano() / int64(bucketSpan)
	oldest := int64(-1)
	for i := range r.counts {
		if r.counts[i] > 0 && idx-r.epoch[i] < int64(buckets) && (oldest < 0 || r.epoch[i] < oldest) {
			oldest = r.epoch[i]
		}
	}
	if oldest < 0 {
		return now
	}
	return time.Unix(0, (oldest+int64(buckets))*int64(bucketSpan))
}

var _ Limiter = (*AccountLimits)(nil)
