package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Coordinator is store.Coordinator on PostgreSQL: the limits and
// connection slots that several instances share (README "Several
// instances"). Each method is one statement (one round trip once pgx has
// prepared it on the connection), most of them a function of
// migrations/0002_coordinator.sql, which says why each is atomic across
// instances (Charge and AdoptSlots: 0004_coordinator_charge.sql). Times travel as Unix nanoseconds: a Grant's Bucket is
// now.UnixNano() / BucketWidth, its RateAt a Unix nanosecond.
type Coordinator struct {
	pool *pgxpool.Pool
	// scrub removes every password the pool knows from an error's text
	// (no DSN secret or Vault-issued password leaves in an error).
	scrub func(text string) string
}

// NewCoordinator returns the coordinator on pool's database, whose schema
// is migrated.
func NewCoordinator(pool *pgxpool.Pool) *Coordinator {
	known := &secrets{}
	known.add(pool.Config().ConnConfig.Password)
	return &Coordinator{pool: pool, scrub: known.scrub}
}

// Coordinator returns the store's coordinator: the limits and connection
// slots of the instances sharing the database, on the store's pool, with
// the passwords the store knows (the DSN's, Vault-issued ones) scrubbed
// from its errors.
func (s *Store) Coordinator() *Coordinator {
	return &Coordinator{pool: s.pool, scrub: s.secrets.scrub}
}

var _ store.Coordinator = (*Coordinator)(nil)

// defaultBucketWidth is the daily quotas' bucket when SharedLimits leaves
// it zero: a quarter-hour, as internal/limits counts locally.
const defaultBucketWidth = 15 * time.Minute

const day = 24 * time.Hour

// limitParams are SharedLimits as the SQL functions take them.
type limitParams struct {
	emission   int64 // a minute / PerMinute in nanoseconds; 0: no rate limit
	burst      int32
	dailyMsgs  int32
	dailyRcpts int32
	width      int64 // bucket width in nanoseconds
	buckets    int32 // buckets in 24 hours
}

// paramsOf normalises l the way internal/limits does: a Burst of 0 with a
// rate is PerMinute, a rate too fast for a nanosecond interval is none,
// negative limits are off.
func paramsOf(l store.SharedLimits) (limitParams, error) {
	width := l.BucketWidth
	if width <= 0 {
		width = defaultBucketWidth
	}
	if width < time.Second || width > day {
		return limitParams{}, fmt.Errorf("postgres coordinator: bucket width %s is not between a second and the 24-hour window", width)
	}
	p := limitParams{width: int64(width), buckets: int32(day / width),
		dailyMsgs: clampLimit(l.DailyMsgs), dailyRcpts: clampLimit(l.DailyRcpts)}
	if l.PerMinute > 0 {
		p.emission = int64(time.Minute / time.Duration(l.PerMinute))
	}
	if p.emission > 0 {
		p.burst = clampLimit(l.Burst)
		if p.burst == 0 {
			p.burst = clampLimit(l.PerMinute)
		}
	}
	// burst × emission must fit the database's bigint; no real limit
	// comes near (a burst of a million at one a minute is 6·10^16 ns).
	if p.emission > 0 && int64(p.burst) > (1<<62)/p.emission {
		return limitParams{}, fmt.Errorf("postgres coordinator: burst %d at %d a minute is beyond any real limit", l.Burst, l.PerMinute)
	}
	return p, nil
}

// clampLimit makes a limit an int32 for the SQL functions: negative is
// off, beyond int32 is no limit worth counting.
func clampLimit(n int) int32 {
	switch {
	case n < 0:
		return 0
	case n > 1<<31-1:
		return 1<<31 - 1
	}
	return int32(n)
}

// ReserveMessage implements store.Coordinator.
func (c *Coordinator) ReserveMessage(ctx context.Context, key string, now time.Time, l store.SharedLimits) (*store.Grant, error) {
	p, err := paramsOf(l)
	if err != nil {
		return nil, err
	}
	var refused string
	var retry int64
	g := &store.Grant{}
	err = c.pool.QueryRow(ctx,
		`SELECT refused, retry_ns, grant_bucket, rate_at FROM coord_reserve_message($1, $2, $3, $4, $5, $6, $7)`,
		key, now.UnixNano(), p.emission, p.burst, p.dailyMsgs, p.width, p.buckets,
	).Scan(&refused, &retry, &g.Bucket, &g.RateAt)
	if err != nil {
		return nil, c.dbError(ctx, "reserving a message", err)
	}
	if refused != "" {
		return nil, refusal(refused, retry, l)
	}
	return g, nil
}

// ReserveRcpt implements store.Coordinator.
func (c *Coordinator) ReserveRcpt(ctx context.Context, key string, g *store.Grant, now time.Time, l store.SharedLimits) error {
	if g == nil {
		return errors.New("postgres coordinator: a recipient needs the message's grant")
	}
	p, err := paramsOf(l)
	if err != nil {
		return err
	}
	var refused string
	var retry int64
	err = c.pool.QueryRow(ctx,
		`SELECT refused, retry_ns FROM coord_reserve_rcpt($1, $2, $3, $4, $5, $6)`,
		key, g.Bucket, now.UnixNano(), p.dailyRcpts, p.width, p.buckets,
	).Scan(&refused, &retry)
	if err != nil {
		return c.dbError(ctx, "reserving a recipient", err)
	}
	if refused != "" {
		return refusal(refused, retry, l)
	}
	return nil
}

// refusal is the *store.Refusal for a kind the SQL functions returned.
func refusal(kind string, retryNs int64, l store.SharedLimits) error {
	r := &store.Refusal{Kind: kind, RetryAt: time.Unix(0, retryNs)}
	switch kind {
	case store.RefusedRate:
		r.Limit = l.PerMinute
	case store.RefusedDailyMsgs:
		r.Limit = l.DailyMsgs
	case store.RefusedDailyRcpts:
		r.Limit = l.DailyRcpts
	default:
		return fmt.Errorf("postgres coordinator: unknown refusal %q (schema newer than this binary?)", kind)
	}
	return r
}

// Release implements store.Coordinator.
func (c *Coordinator) Release(ctx context.Context, key string, g *store.Grant, msgs, rcpts int, now time.Time, l store.SharedLimits) error {
	if g == nil {
		return errors.New("postgres coordinator: releasing needs the message's grant")
	}
	if msgs < 0 || msgs > 1 || rcpts < 0 || rcpts > 1<<31-1 {
		return fmt.Errorf("postgres coordinator: cannot release %d messages and %d recipients of one grant", msgs, rcpts)
	}
	if msgs == 0 && rcpts == 0 {
		return nil
	}
	p, err := paramsOf(l)
	if err != nil {
		return err
	}
	_, err = c.pool.Exec(ctx, `SELECT coord_release($1, $2, $3, $4, $5, $6, $7)`,
		key, g.Bucket, int32(msgs), int32(rcpts), now.UnixNano(), p.emission, g.RateAt)
	return c.dbError(ctx, "releasing a reservation", err)
}

// Usage implements store.Coordinator.
func (c *Coordinator) Usage(ctx context.Context, key string, now time.Time) (msgs, rcpts int, err error) {
	var m, r int64
	err = c.pool.QueryRow(ctx,
		`SELECT coalesce(sum(msgs), 0), coalesce(sum(rcpts), 0) FROM coord_count WHERE key = $1 AND expires_ns > $2`,
		key, now.UnixNano()).Scan(&m, &r)
	if err != nil {
		return 0, 0, c.dbError(ctx, "reading usage", err)
	}
	return int(m), int(r), nil
}
