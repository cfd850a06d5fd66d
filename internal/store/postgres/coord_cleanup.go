package postgres

import (
	"context"
	"time"
)

// cleanupStatements delete what no call needs any more at now ($1 is
// now less grace). Each runs in its own transaction and skips rows others hold locked, so
// that it never waits for a reservation or an acquisition and never
// deadlocks with one; what it skips, the next run takes.
var cleanupStatements = []struct {
	what, sql string
	grace     time.Duration
}{
	{"counts that left the 24-hour window", `
DELETE FROM coord_count c WHERE (c.key, c.bucket) IN (
    SELECT s.key, s.bucket FROM coord_count s WHERE s.expires_ns <= $1 FOR UPDATE SKIP LOCKED)`, 0},
	// An expired lease nobody took over is still its owner's to renew
	// (ExtendSlots): only one whose owner has been silent for a while is
	// surely abandoned.
	{"abandoned leases", `
DELETE FROM coord_slot c WHERE (c.key, c.slot) IN (
    SELECT s.key, s.slot FROM coord_slot s WHERE s.until_ns <= $1 FOR UPDATE SKIP LOCKED)`, abandonedAfter},
	{"expired waits", `
DELETE FROM coord_want c WHERE (c.key, c.owner) IN (
    SELECT w.key, w.owner FROM coord_want w WHERE w.until_ns <= $1 FOR UPDATE SKIP LOCKED)`, abandonedAfter},
	// A key's row holds only its lock and its rate state, which says
	// nothing once the limiter is full again (tat_ns <= now): deleting it
	// loses nothing even if a count or a lease of the key appears
	// meanwhile (coord_lock_key creates it again).
	{"idle keys", `
DELETE FROM coord_key c WHERE c.key IN (
    SELECT k.key FROM coord_key k
     WHERE k.tat_ns <= $1
       AND NOT EXISTS (SELECT 1 FROM coord_count n WHERE n.key = k.key)
       AND NOT EXISTS (SELECT 1 FROM coord_slot s WHERE s.key = k.key)
       FOR UPDATE OF k SKIP LOCKED)`, 0},
}

// abandonedAfter is how long a lease or a wait stays after its end
// before Cleanup deletes it.
const abandonedAfter = time.Hour

// Cleanup deletes what the coordinator's tables no longer need at now:
// counts older than the 24-hour window, leases and waits that ended over
// an hour ago, and the rows of keys without any of them. The calls clean
// up after themselves where it is cheap (a reservation deletes its key's
// old counts, an acquisition reuses expired slots, a wait is one row per
// key and owner), so Cleanup is for keys that went quiet and owners that
// vanished: any instance may run it, at any time and as often as it
// likes; hourly is plenty (README "Several instances"). It returns the
// number of rows deleted.
func (c *Coordinator) Cleanup(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for _, st := range cleanupStatements {
		tag, err := c.pool.Exec(ctx, st.sql, now.Add(-st.grace).UnixNano())
		if err != nil {
			return total, c.dbError(ctx, "deleting "+st.what, err)
		}
		total += tag.RowsAffected()
	}
	return total, nil
}
