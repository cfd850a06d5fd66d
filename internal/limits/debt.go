package limits

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// debt is what the instance sent through one account on its share of the
// limits while the database was unreachable, not charged to the database
// yet (README "Failure modes"). Without the charge the instances would
// send a second quota once the database is back: its counts would not
// know the first.
type debt struct {
	lim    store.SharedLimits // the account's newest limits
	counts map[int64]*store.BucketCount
	// tat is the account's rate limiter at its full rate after these
	// messages alone (a generic cell rate algorithm's theoretical arrival
	// time): how far ahead of now they put it is the charge's RateDebt.
	tat time.Time
}

// bucketOf is the quarter-hour of the daily quotas t falls in, as the
// database numbers them (store.Grant.Bucket).
func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(bucketSpan) }

// owe remembers msgs messages and rcpts recipients sent through key on
// the share, counted in bucket; the messages were reserved at at.
func (co *Coordination) owe(key string, lim store.SharedLimits, bucket int64, at time.Time, msgs, rcpts int) {
	if msgs == 0 && rcpts == 0 {
		return
	}
	co.debtMu.Lock()
	defer co.debtMu.Unlock()
	d := co.debts[key]
	if d == nil {
		d = &debt{counts: map[int64]*store.BucketCount{}}
		co.debts[key] = d
	}
	d.lim = lim
	d.add(store.BucketCount{Bucket: bucket, Msgs: msgs, Rcpts: rcpts})
	if lim.PerMinute > 0 && msgs > 0 {
		if d.tat.Before(at) {
			d.tat = at
		}
		d.tat = d.tat.Add(time.Duration(msgs) * (time.Minute / time.Duration(lim.PerMinute)))
	}
}

func (d *debt) add(n store.BucketCount) {
	c := d.counts[n.Bucket]
	if c == nil {
		c = &store.BucketCount{Bucket: n.Bucket}
		d.counts[n.Bucket] = c
	}
	c.Msgs += n.Msgs
	c.Rcpts += n.Rcpts
}

// merge adds o, a debt that could not be charged, back into d.
func (d *debt) merge(o *debt) {
	for _, n := range o.counts {
		d.add(*n)
	}
	if o.tat.After(d.tat) {
		d.tat = o.tat
	}
}

// totals are d's messages and recipients.
func (d *debt) totals() (msgs, rcpts int) {
	for _, n := range d.counts {
		msgs += n.Msgs
		rcpts += n.Rcpts
	}
	return msgs, rcpts
}

// charge is d as a store.Charge at now.
func (d *debt) charge(now time.Time) store.Charge {
	c := store.Charge{RateDebt: max(d.tat.Sub(now), 0)}
	for _, b := range slices.Sorted(maps.Keys(d.counts)) {
		c.Counts = append(c.Counts, *d.counts[b])
	}
	return c
}

// settle charges what key owes to the database; nil when it owes nothing
// or the charge landed, errUseFallback when the database cannot take it
// now (the debt is kept, and tried again by the next reservation or
// renewal: Run).
func (co *Coordination) settle(ctx context.Context, key string) error {
	co.debtMu.Lock()
	d := co.debts[key]
	delete(co.debts, key)
	co.debtMu.Unlock()
	if d == nil {
		return nil
	}
	now := time.Now()
	c := d.charge(now)
	err := co.call(ctx, func(ctx context.Context) error {
		return co.coord.Charge(ctx, key, c, now, d.lim)
	})
	if err == nil {
		msgs, rcpts := d.totals()
		co.log.Debug("shared limits: what was sent on this instance's share is counted in the database", "account", key,
			"messages", msgs, "recipients", rcpts)
		return nil
	}
	co.debtMu.Lock()
	if newer := co.debts[key]; newer != nil {
		d.merge(newer)
		d.lim = newer.lim
	}
	co.debts[key] = d
	co.debtMu.Unlock()
	return err
}

// owing returns the keys that owe the database something.
func (co *Coordination) owing() []string {
	co.debtMu.Lock()
	defer co.debtMu.Unlock()
	return slices.Collect(maps.Keys(co.debts))
}
