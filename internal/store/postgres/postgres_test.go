package postgres

import (
	"context"
	"os"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedPostgres()
	stopDurable()
	os.Exit(code)
}

func TestConformance(t *testing.T) {
	db := newTestDB(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, db.store(t), Options{})
	})
}

func TestConformanceSealed(t *testing.T) {
	db := newTestDB(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, db.store(t), Options{Sealer: storetest.NewSealer(t)})
	})
}

// openTest opens a store on dsn, logging into the test on failure, and
// closes it when the test ends.
func openTest(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = new(testutil.LogBuffer).Logger(t)
	}
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}
