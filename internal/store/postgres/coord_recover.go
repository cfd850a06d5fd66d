package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Charge implements store.Coordinator: one statement,
// coord_charge of migrations/0004_coordinator_charge.sql.
func (c *Coordinator) Charge(ctx context.Context, key string, ch store.Charge, now time.Time, l store.SharedLimits) error {
	p, err := paramsOf(l)
	if err != nil {
		return err
	}
	if ch.RateDebt < 0 {
		ch.RateDebt = 0
	}
	buckets := make([]int64, len(ch.Counts))
	msgs := make([]int32, len(ch.Counts))
	rcpts := make([]int32, len(ch.Counts))
	for i, n := range ch.Counts {
		if n.Msgs < 0 || n.Rcpts < 0 {
			return errors.New("postgres coordinator: a charge cannot count less than nothing")
		}
		buckets[i], msgs[i], rcpts[i] = n.Bucket, clampLimit(n.Msgs), clampLimit(n.Rcpts)
	}
	_, err = c.pool.Exec(ctx, `SELECT coord_charge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		key, buckets, msgs, rcpts, now.UnixNano(), p.emission, p.burst, int64(ch.RateDebt), p.width, p.buckets)
	return c.dbError(ctx, "charging what was sent on the instance's share", err)
}

// AdoptSlots implements store.Coordinator: one statement,
// coord_adopt_slots of migrations/0004_coordinator_charge.sql.
func (c *Coordinator) AdoptSlots(ctx context.Context, key, owner string, n int, now, until time.Time) ([]int, error) {
	if n < 0 {
		return nil, errors.New("postgres coordinator: cannot hold fewer than no slots")
	}
	rows, err := c.pool.Query(ctx, `SELECT s FROM coord_adopt_slots($1, $2, $3, $4, $5) AS s`,
		key, owner, clampLimit(n), now.UnixNano(), until.UnixNano())
	if err != nil {
		return nil, c.dbError(ctx, "adopting connection slots", err)
	}
	defer rows.Close()
	var slots []int
	for rows.Next() {
		var s int32
		if err := rows.Scan(&s); err != nil {
			return nil, c.dbError(ctx, "adopting connection slots", err)
		}
		slots = append(slots, int(s))
	}
	if err := rows.Err(); err != nil {
		return nil, c.dbError(ctx, "adopting connection slots", err)
	}
	return slots, nil
}
