package postgres

import (
	"context"
	"time"
)

// AcquireSlot implements store.Coordinator.
func (c *Coordinator) AcquireSlot(ctx context.Context, key, owner string, size int, now, until time.Time) (slot int, ok bool, err error) {
	if size <= 0 {
		return -1, false, nil
	}
	var got int32
	err = c.pool.QueryRow(ctx,
		`SELECT got_slot, granted FROM coord_acquire_slot($1, $2, $3, $4, $5)`,
		key, owner, clampLimit(size), now.UnixNano(), until.UnixNano()).Scan(&got, &ok)
	if err != nil {
		return -1, false, c.dbError(ctx, "acquiring a connection slot", err)
	}
	return int(got), ok, nil
}

// ReleaseSlot implements store.Coordinator. A single-row DELETE: when
// an acquirer takes the slot over at the same time, the DELETE waits for
// it and then re-checks the owner on the newest row (READ COMMITTED), so
// another owner's lease is never freed.
func (c *Coordinator) ReleaseSlot(ctx context.Context, key, owner string, slot int) error {
	_, err := c.pool.Exec(ctx, `DELETE FROM coord_slot WHERE key = $1 AND slot = $2 AND owner = $3`,
		key, int64(slot), owner)
	return c.dbError(ctx, "releasing a connection slot", err)
}

// ExtendSlots implements store.Coordinator; the keys come sorted.
func (c *Coordinator) ExtendSlots(ctx context.Context, owner string, now, until time.Time) (contended []string, err error) {
	rows, err := c.pool.Query(ctx, `SELECT k FROM coord_extend_slots($1, $2, $3) AS k`,
		owner, now.UnixNano(), until.UnixNano())
	if err != nil {
		return nil, c.dbError(ctx, "extending connection slots", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return nil, c.dbError(ctx, "extending connection slots", err)
		}
		contended = append(contended, key)
	}
	if err := rows.Err(); err != nil {
		return nil, c.dbError(ctx, "extending connection slots", err)
	}
	return contended, nil
}

// WantSlot implements store.Coordinator.
func (c *Coordinator) WantSlot(ctx context.Context, key, owner string, until time.Time) error {
	_, err := c.pool.Exec(ctx, `SELECT coord_want_slot($1, $2, $3)`, key, owner, until.UnixNano())
	return c.dbError(ctx, "recording a wait for a connection slot", err)
}

// SlotsInUse implements store.Coordinator.
func (c *Coordinator) SlotsInUse(ctx context.Context, key string, now time.Time) (int, error) {
	var n int64
	err := c.pool.QueryRow(ctx, `SELECT count(*) FROM coord_slot WHERE key = $1 AND until_ns > $2`,
		key, now.UnixNano()).Scan(&n)
	if err != nil {
		return 0, c.dbError(ctx, "counting connection slots", err)
	}
	return int(n), nil
}

// ReleaseSlots implements store.Coordinator; it also forgets owner's
// waits (WantSlot): an owner that stops waits for nothing.
func (c *Coordinator) ReleaseSlots(ctx context.Context, owner string) error {
	_, err := c.pool.Exec(ctx, `SELECT coord_release_slots($1)`, owner)
	return c.dbError(ctx, "releasing connection slots", err)
}
