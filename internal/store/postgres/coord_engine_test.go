package postgres

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestCoordinatorUnavailable stops the database under a coordinator that
// has used it: every call fails with store.ErrUnavailable, and no error
// holds the DSN's password.
func TestCoordinatorUnavailable(t *testing.T) {
	const password = "s3cret-Passw0rd"
	srv, dsn := ownServer(t, testutil.PostgresOptions{})
	// The server trusts loopback logins: the password is only carried.
	dsn = strings.Replace(dsn, "postgres@", "postgres:"+password+"@", 1)
	applyCoordinatorSchemaForTest(t, dsn)
	c := NewCoordinator(newTestPool(t, dsn))
	ctx := t.Context()
	now, l := time.Now(), store.SharedLimits{PerMinute: 30, DailyMsgs: 1000}
	g, err := c.ReserveMessage(ctx, "k", now, l)
	if err != nil {
		t.Fatalf("ReserveMessage before the stop: %v", err)
	}
	srv.Stop()

	calls := []struct {
		name string
		call func() error
	}{
		{"ReserveMessage", func() error { _, err := c.ReserveMessage(ctx, "k", now, l); return err }},
		{"ReserveRcpt", func() error { return c.ReserveRcpt(ctx, "k", g, now, l) }},
		{"Release", func() error { return c.Release(ctx, "k", g, 1, 0, now, l) }},
		{"Usage", func() error { _, _, err := c.Usage(ctx, "k", now); return err }},
		{"AcquireSlot", func() error { _, _, err := c.AcquireSlot(ctx, "k", "A", 3, now, now.Add(time.Minute)); return err }},
		{"ReleaseSlot", func() error { return c.ReleaseSlot(ctx, "k", "A", 0) }},
		{"ExtendSlots", func() error { _, err := c.ExtendSlots(ctx, "A", now, now.Add(time.Minute)); return err }},
		{"WantSlot", func() error { return c.WantSlot(ctx, "k", "A", now) }},
		{"SlotsInUse", func() error { _, err := c.SlotsInUse(ctx, "k", now); return err }},
		{"ReleaseSlots", func() error { return c.ReleaseSlots(ctx, "A") }},
		{"Charge", func() error { return c.Charge(ctx, "k", store.Charge{RateDebt: time.Second}, now, l) }},
		{"AdoptSlots", func() error { _, err := c.AdoptSlots(ctx, "k", "A", 1, now, now.Add(time.Minute)); return err }},
		{"Cleanup", func() error { _, err := c.Cleanup(ctx, now); return err }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			t.Log(err)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("%v, want store.ErrUnavailable", err)
			}
			wantHidden(t, err, password)
		})
	}
}

// ownServer starts a PostgreSQL server of the test's own (stopped when it
// ends) and returns it with a new database's DSN.
func ownServer(t testing.TB, opts testutil.PostgresOptions) (*testutil.PostgresServer, string) {
	t.Helper()
	srv, err := testutil.StartPostgresServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	db, err := srv.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return srv, srv.DSN(db)
}

// TestCoordinatorNeedsReadCommitted: a session whose transactions see one
// snapshot could miss the counts the key's previous holder committed, so
// the functions refuse to run in one.
func TestCoordinatorNeedsReadCommitted(t *testing.T) {
	_, dsn := testutil.Postgres(t)
	applyCoordinatorSchemaForTest(t, dsn)
	c := NewCoordinator(newTestPool(t, dsn+"&default_transaction_isolation=repeatable%20read"))
	_, err := c.ReserveMessage(t.Context(), "k", time.Now(), store.SharedLimits{DailyMsgs: 1})
	if err == nil || !strings.Contains(err.Error(), "needs READ COMMITTED") || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ReserveMessage in REPEATABLE READ: %v, want the READ COMMITTED error", err)
	}
}

// TestCoordinatorCleanup: Cleanup deletes what left the window and what
// was abandoned an hour ago or more, and nothing that still counts.
func TestCoordinatorCleanup(t *testing.T) {
	c := openCoordinator(t).(*Coordinator)
	ctx := t.Context()
	base := time.Now().Truncate(time.Hour)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	l := store.SharedLimits{PerMinute: 60, DailyMsgs: 100}
	old, err := c.ReserveMessage(ctx, "old", at(0), l)
	must(t, err)
	must(t, c.ReserveRcpt(ctx, "old", old, at(0), l))
	must(t, c.WantSlot(ctx, "old", "gone", at(time.Minute)))
	_, _, err = c.AcquireSlot(ctx, "gone", "gone", 1, at(0), at(time.Minute))
	must(t, err)
	_, err = c.ReserveMessage(ctx, "live", at(25*time.Hour), l)
	must(t, err)
	_, _, err = c.AcquireSlot(ctx, "recent", "late", 1, at(0), at(24*time.Hour+30*time.Minute))
	must(t, err)

	n, err := c.Cleanup(ctx, at(25*time.Hour))
	must(t, err)
	// old's count and key, gone's lease and key, the wait; recent's lease
	// stays (it ended half an hour ago), and so its key.
	if n != 5 {
		t.Errorf("Cleanup deleted %d rows, want 5", n)
	}
	for table, want := range map[string][]string{
		"coord_key":   {"live", "recent"},
		"coord_count": {"live"},
		"coord_slot":  {"recent"},
		"coord_want":  nil,
	} {
		if got := keysIn(t, c, table); !slices.Equal(got, want) {
			t.Errorf("%s holds %q after Cleanup, want %q", table, got, want)
		}
	}
	// The late owner may still renew its lease.
	if _, err := c.ExtendSlots(ctx, "late", at(25*time.Hour), at(26*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.SlotsInUse(ctx, "recent", at(25*time.Hour)); err != nil || n != 1 {
		t.Fatalf("SlotsInUse(recent) = %d, %v after the renewal, want 1", n, err)
	}
}

// TestCoordinatorDeletesItsOldCounts: a reservation deletes its key's
// counts that left the window, so a busy key keeps a day of rows.
func TestCoordinatorDeletesItsOldCounts(t *testing.T) {
	c := openCoordinator(t).(*Coordinator)
	base := time.Now()
	for d := time.Duration(0); d <= 30*time.Hour; d += time.Hour {
		_, err := c.ReserveMessage(t.Context(), "k", base.Add(d), store.SharedLimits{DailyMsgs: 1000})
		must(t, err)
	}
	if n := len(keysIn(t, c, "coord_count")); n > 25 {
		t.Fatalf("coord_count holds %d rows of hourly reservations, want at most 25", n)
	}
}

// keysIn returns the key column of table, sorted.
func keysIn(t *testing.T, c *Coordinator, table string) []string {
	t.Helper()
	rows, err := c.pool.Query(t.Context(), "SELECT key FROM "+pgx.Identifier{table}.Sanitize()+" ORDER BY key")
	must(t, err)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	return keys
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
