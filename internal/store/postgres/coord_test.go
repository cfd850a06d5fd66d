package postgres

import (
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestCoordinator(t *testing.T) {
	storetest.RunCoordinator(t, openCoordinator)
}

// coordinatorDSNs holds each test's database, so that a test's later
// openCoordinator calls are other instances on the same one.
var coordinatorDSNs sync.Map // *testing.T → string

// openCoordinator returns a coordinator with its own pool on t's
// database, created and migrated at t's first call.
func openCoordinator(t *testing.T) store.Coordinator {
	t.Helper()
	dsn, ok := coordinatorDSNs.Load(t)
	if !ok {
		_, fresh := testutil.Postgres(t)
		applyCoordinatorSchemaForTest(t, fresh)
		coordinatorDSNs.Store(t, fresh)
		t.Cleanup(func() { coordinatorDSNs.Delete(t) })
		dsn = fresh
	}
	return NewCoordinator(newTestPool(t, dsn.(string)))
}

// newTestPool opens a pool on dsn, closed when t ends.
func newTestPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// applyCoordinatorSchemaForTest migrates dsn's database with the
// engine's own Open (every migration, the coordinator's included).
func applyCoordinatorSchemaForTest(t testing.TB, dsn string) {
	t.Helper()
	st, err := Open(t.Context(), dsn, Options{})
	if err != nil {
		t.Fatalf("migrating: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}
