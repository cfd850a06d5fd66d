package limits

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit kinds, as reported in errors and metrics.
const (
	KindRate          = "rate_per_minute"
	KindDailyMessages = "daily_messages"
	KindDailyRcpts    = "daily_recipients"
	KindMessageRcpts  = "recipients_per_message"
)

// LimitError says which limit refused the work.
type LimitError struct {
	Kind  string
	Limit int
	// RetryAt is the earliest time the same request can be admitted
	// (the rate limit's next token, the oldest quarter-hour of a daily
	// count leaving the window); zero when no wait helps (a message with
	// more recipients than allowed).
	RetryAt time.Time
}

func (e *LimitError) Error() string { return fmt.Sprintf("%s limit of %d reached", e.Kind, e.Limit) }

// IsLimit reports whether err is a LimitError.
func IsLimit(err error) (*LimitError, bool) {
	var le *LimitError
	ok := errors.As(err, &le)
	return le, ok
}

// AccountLimits enforces one mailbox's sending limits: a token bucket per
// minute, and rolling 24-hour message and recipient counts. The counts are
// kept in 96 quarter-hour buckets (a few hundred bytes per account, so ten
// thousand accounts stay cheap). Zero limits are off.
type AccountLimits struct {
	perMinute, burst      int
	dailyMsgs, dailyRcpts int
	maxRcpts              int

	limiter *rate.Limiter

	mu    sync.Mutex
	msgs  rolling
	rcpts rolling
}

// NewAccountLimits returns the limits for one account; nil when none is set.
func NewAccountLimits(perMinute, burst, dailyMsgs, dailyRcpts, maxRcptsPerMessage int) *AccountLimits {
	if perMinute <= 0 && dailyMsgs <= 0 && dailyRcpts <= 0 && maxRcptsPerMessage <= 0 {
		return nil
	}
	a := &AccountLimits{perMinute: perMinute, burst: burst, dailyMsgs: dailyMsgs, dailyRcpts: dailyRcpts, maxRcpts: maxRcptsPerMessage}
	if perMinute > 0 {
		if a.burst <= 0 {
			a.burst = perMinute
		}
		a.limiter = rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), a.burst)
	}
	return a
}

// InheritUsage copies old's rolling counts, so that counters replaced by a
// reload (the account's limits changed) keep the quota already used.
func (a *AccountLimits) InheritUsage(old *AccountLimits) {
	if a == nil || old == nil || a == old {
		return
	}
	old.mu.Lock()
	msgs, rcpts := old.msgs.clone(), old.rcpts.clone()
	old.mu.Unlock()
	a.mu.Lock()
	a.msgs, a.rcpts = msgs, rcpts
	a.mu.Unlock()
}

// Usage returns the share used of the daily quotas (0..1), by kind; only
// quotas that are set appear.
func (a *AccountLimits) Usage(now time.Time) map[string]float64 {
	out := map[string]float64{}
	if a == nil {
		return out
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dailyMsgs > 0 {
		out[KindDailyMessages] = float64(a.msgs.sum(now)) / float64(a.dailyMsgs)
	}
	if a.dailyRcpts > 0 {
		out[KindDailyRcpts] = float64(a.rcpts.sum(now)) / float64(a.dailyRcpts)
	}
	return out
}

const (
	bucketSpan = 15 * time.Minute
	buckets    = int(24 * time.Hour / bucketSpan)
)

// rolling counts events of the last 24 hours in quarter-hour buckets.
type rolling struct {
	counts []int32 // allocated on first use
	epoch  []int64 // the bucket index each slot currently holds
}

func (r *rolling) clone() rolling {
	return rolling{counts: append([]int32(nil), r.counts...), epoch: append([]int64(nil), r.epoch...)}
}

func (r *rolling) add(now time.Time, n int) {
	if r.counts == nil {
		r.counts, r.epoch = make([]int32, buckets), make([]int64, buckets)
	}
	idx := now.UnixNano() / int64(bucketSpan)
	slot := int(idx % int64(buckets))
	if r.epoch[slot] != idx {
		r.epoch[slot], r.counts[slot] = idx, 0
	}
	r.counts[slot] += int32(n)
}

func (r *rolling) sum(now time.Time) int {
	if r.counts == nil {
		return 0
	}
	idx := now.UnixNano() / int64(bucketSpan)
	total := 0
	for i := range r.counts {
		if idx-r.epoch[i] < int64(buckets) {
			total += int(r.counts[i])
		}
	}
	return total
}
