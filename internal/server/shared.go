package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/store/postgres"
)

// sharedLimitsHealth is the "limits" entry of /health/ready when instances
// share one database: whether the limits are shared right now or the
// instance runs on its share of them (README "Failure modes"). nil
// without a shared database. Running on its share keeps the relay ready:
// direct mode goes on; it is reported as degraded.
func (r *Runtime) sharedLimitsHealth() (status map[string]any, degraded bool) {
	co := r.deps.coord
	if co == nil {
		return nil, false
	}
	degraded, err := co.Degraded()
	status = map[string]any{"shared": !degraded, "expected_instances": co.Instances()}
	if degraded && err != nil {
		status["error"] = err.Error()
	}
	return status, degraded
}

// sharedStore reports whether cfg's store is a database several instances
// share.
func sharedStore(cfg *config.Config) bool {
	return cfg.Store != nil && cfg.Store.Postgres != nil
}

// registerCoordinationMetrics exports the state of the shared limits.
func registerCoordinationMetrics(reg prometheus.Registerer, co *limits.Coordination) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "oauthrelay_shared_limits_degraded",
			Help: "1 while the shared database is unreachable and this instance enforces its share (1/expected_instances) of every limit alone.",
		}, func() float64 {
			if d, _ := co.Degraded(); d {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "oauthrelay_shared_limits_fallbacks_total",
			Help: "Reservations and connection slots this instance took on its own share because the shared database was unreachable.",
		}, func() float64 { return float64(co.Fallbacks()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "oauthrelay_shared_limits_errors_total",
			Help: "Calls to the shared database that failed although it answered (a bug, logged); each used this instance's share.",
		}, func() float64 { return float64(co.Errors()) }),
	)
}

// sharedDB is the PostgreSQL database several instances share: the store
// (queue and history), the coordination of limits and connection slots,
// and the Vault-issued database user when vault_credentials is set. It is
// opened before the accounts are built (their limits and pools use it)
// and closed after their pools, which give their slots back through it.
type sharedDB struct {
	store *postgres.Store
	creds *secrets.DatabaseCredentials // nil: the DSN's user
	coord *limits.Coordination
	stop  context.CancelFunc
	done  chan struct{}
}

// coordinatorCleanup is how often an instance removes the coordinator's
// rows that have ended (old counts, leases, waits); any instance may.
const coordinatorCleanup = time.Hour

// openShared opens the shared database of b's configuration.
func (r *Runtime) openShared(ctx context.Context, b *built) (*sharedDB, error) {
	pg := b.cfg.Store.Postgres
	dsn, err := b.store.Get(pg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store (PostgreSQL): dsn: %w", err)
	}
	sealer, err := r.sealer(ctx, b)
	if err != nil {
		return nil, err
	}
	opts := postgres.Options{Sealer: sealer, Logger: r.log.Named("store"), MaxConns: pg.MaxConnections, Role: pg.Role,
		NoMigrate: r.opts.NoMigrate}
	sh := &sharedDB{}
	if pg.VaultCredentials != "" {
		if b.vault == nil {
			return nil, errors.New("store (PostgreSQL): vault_credentials needs the vault block")
		}
		if sh.creds, err = b.vault.DatabaseCredentials(ctx, pg.VaultCredentials); err != nil {
			return nil, fmt.Errorf("store (PostgreSQL): %w", err)
		}
		opts.Credentials = sh.creds.Credentials
	}
	if sh.store, err = postgres.Open(ctx, dsn, opts); err != nil {
		sh.closeCreds(r.log)
		return nil, fmt.Errorf("store (PostgreSQL): %w", err)
	}
	if sh.creds != nil {
		sh.creds.OnRotate(sh.store.RotateConnections)
	}
	sh.coord = limits.NewCoordination(sh.store.Coordinator(), limits.CoordinationSettings{
		Owner: instanceID(true), Instances: pg.ExpectedInstances, Log: r.log.Named("limits"),
	})
	registerCoordinationMetrics(r.registry, sh.coord)
	r.log.Info("shared database open", "instance", sh.coord.Owner(), "expected_instances", pg.ExpectedInstances,
		"vault_credentials", pg.VaultCredentials != "")
	return sh, nil
}

// start renews the instance's connection slots and cleans up the
// coordinator's ended rows until close.
func (sh *sharedDB) start(log hclog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	sh.stop, sh.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sh.coord.Run(ctx) // frees the instance's slots when it ends
	}()
	go func() {
		wg.Wait()
		close(sh.done)
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(coordinatorCleanup)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				cctx, ccancel := context.WithTimeout(ctx, time.Minute)
				if n, err := sh.store.Coordinator().Cleanup(cctx, now); err != nil {
					log.Warn("shared limits: cleaning up ended rows failed", "error", err)
				} else if n > 0 {
					log.Debug("shared limits: ended rows removed", "rows", n)
				}
				ccancel()
			}
		}
	}()
}

// close frees the instance's slots, closes the store, then gives the
// Vault-issued user back (its connections are closed by then).
func (sh *sharedDB) close(log hclog.Logger) error {
	if sh == nil {
		return nil
	}
	if sh.stop != nil {
		sh.stop()
		<-sh.done
	}
	err := sh.store.Close()
	sh.closeCreds(log)
	return err
}

func (sh *sharedDB) closeCreds(log hclog.Logger) {
	if sh.creds == nil {
		return
	}
	if err := sh.creds.Close(); err != nil {
		log.Warn("revoking the database user's lease failed; it expires on its own", "error", err)
	}
}
