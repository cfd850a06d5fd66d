package postgres

import (
	"os"
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

// applyCoordinatorSchemaForTest runs migrations/0002_coordinator.sql on
// dsn's database. TEMPORARY: it stands in for the engine's Open and its
// migration runner until they are merged, which then replace it.
func applyCoordinatorSchemaForTest(t testing.TB, dsn string) {
	t.Helper()
	sql, err := os.ReadFile("migrations/0002_coordinator.sql")
	if err != nil {
		t.Fatal(err)
	}
	pool := newTestPool(t, dsn)
	if _, err := pool.Exec(t.Context(), string(sql)); err != nil {
		t.Fatalf("applying the coordinator's schema: %v", err)
	}
	pool.Close()
}
