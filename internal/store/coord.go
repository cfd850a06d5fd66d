package store

import (
	"context"
	"time"
)

// Coordinator is the state several relay instances share through one
// database (the PostgreSQL engine): account limits as reservations and
// per-mailbox connection slots as leases, so that N instances behave as
// one relay towards the provider (README "Several instances"). Engines for
// one instance (SQLite) do not implement it.
//
// Times come from the callers' clocks, as with Claim's leases: instances
// must keep their clocks in sync (NTP), which every cloud host does.
// Every method is one round trip and atomic across instances.
type Coordinator interface {
	// ReserveMessage takes one message's share of key's limits at now:
	// one token of the rate limit (a generic cell rate algorithm: at most
	// Burst at once, then PerMinute a minute) and one message of the
	// rolling 24-hour quota. Refused: a *Refusal naming the limit.
	ReserveMessage(ctx context.Context, key string, now time.Time, l SharedLimits) (*Grant, error)
	// ReserveRcpt takes one recipient of the daily recipient quota, counted
	// in the grant's quarter-hour. Refused: a *Refusal.
	ReserveRcpt(ctx context.Context, key string, g *Grant, now time.Time, l SharedLimits) error
	// Release gives back msgs messages (0 or 1) and rcpts recipients of a
	// grant, and the rate token when msgs is 1 and it is still ahead of
	// now (a message that was not sent).
	Release(ctx context.Context, key string, g *Grant, msgs, rcpts int, now time.Time, l SharedLimits) error
	// Usage returns the messages and recipients counted in the 24 hours
	// before now.
	Usage(ctx context.Context, key string, now time.Time) (msgs, rcpts int, err error)
	// Charge adds to key's limits what an instance sent on its own share
	// while the database was unreachable (README "Failure modes"), so
	// that the instances do not send a second quota once it is back:
	// c's counts go into their buckets (those that left the window at
	// now count nothing) and the rate limiter moves c.RateDebt further
	// ahead, no further than empty (Burst intervals ahead of now). It
	// never refuses: the messages are sent.
	Charge(ctx context.Context, key string, c Charge, now time.Time, l SharedLimits) error

	// AcquireSlot leases one of size connection slots of key to owner
	// until until. ok is false when every slot is held by a live lease of
	// another owner or of this one. Slots beyond size (a lowered cap)
	// are never handed out.
	AcquireSlot(ctx context.Context, key, owner string, size int, now, until time.Time) (slot int, ok bool, err error)
	// ReleaseSlot frees a slot owner holds (no error when it does not:
	// the lease expired and may be another owner's now).
	ReleaseSlot(ctx context.Context, key, owner string, slot int) error
	// ExtendSlots renews every lease owner holds to until and reports the
	// keys whose slots someone else is waiting for (WantSlot), so that
	// the owner can close idle connections there.
	ExtendSlots(ctx context.Context, owner string, now, until time.Time) (contended []string, err error)
	// WantSlot records that owner waits for a slot of key until until.
	WantSlot(ctx context.Context, key, owner string, until time.Time) error
	// SlotsInUse counts key's slots held by live leases at now.
	SlotsInUse(ctx context.Context, key string, now time.Time) (int, error)
	// ReleaseSlots frees every slot owner holds (an instance that
	// restarts or stops).
	ReleaseSlots(ctx context.Context, owner string) error
	// AdoptSlots makes owner hold exactly n slots of key until until and
	// returns them, ascending: it keeps the lowest n of those it holds
	// (renewed; expired ones too while nobody took them over), frees the
	// others, and when it holds fewer leases the lowest free ones, beyond
	// any size. It is for connections that are open without a lease —
	// opened while the database was unreachable, or whose lease lapsed
	// and was taken over: they count against the cap again, and
	// AcquireSlot refuses everyone until fewer than size are live.
	AdoptSlots(ctx context.Context, key, owner string, n int, now, until time.Time) ([]int, error)
}

// Charge is what one instance sent through an account on its own share of
// the limits while the database was unreachable.
type Charge struct {
	Counts []BucketCount
	// RateDebt is how far ahead of now those messages put the rate
	// limiter when counted at the account's full rate (the instance's
	// own theoretical arrival time less now; 0 when it is behind).
	RateDebt time.Duration
}

// BucketCount is messages and recipients of one bucket of the daily
// quotas (Grant.Bucket).
type BucketCount struct {
	Bucket      int64
	Msgs, Rcpts int
}

// SharedLimits are one account's limits as the coordinator applies them;
// zero fields are no limit.
type SharedLimits struct {
	PerMinute   int // rate
	Burst       int // at most this many at once (>= 1 when PerMinute > 0)
	DailyMsgs   int // rolling 24 hours
	DailyRcpts  int
	BucketWidth time.Duration // the daily quotas' buckets; 15 minutes when zero
}

// Grant is a reserved message: where its counts went, so that Release
// takes them back from the same place.
type Grant struct {
	Bucket int64 // the quarter-hour (now / BucketWidth) the counts went into
	// RateAt is the rate limiter's state after the token was taken
	// (the "theoretical arrival time"), 0 without a rate limit.
	RateAt int64
}

// Refusal is a limit that refused a reservation.
type Refusal struct {
	Kind    string // "rate_per_minute", "daily_messages" or "daily_recipients" (limits.Kind*)
	Limit   int
	RetryAt time.Time // when the limit has room again
}

func (r *Refusal) Error() string { return "shared " + r.Kind + " limit reached" }

// Refusal kinds.
const (
	RefusedRate       = "rate_per_minute"
	RefusedDailyMsgs  = "daily_messages"
	RefusedDailyRcpts = "daily_recipients"
)
