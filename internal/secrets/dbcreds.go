package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DatabaseCredentials are dynamic PostgreSQL credentials from Vault's
// database secrets engine: each read of <mount>/creds/<role> makes Vault
// create a login role for the relay, which Vault drops when the read's
// lease ends (README "PostgreSQL credentials from Vault"). They renew the
// lease while Vault extends it and read new credentials a third of the
// lease duration before it ends for good — at the role's max TTL, when a
// renewal fails, when the lease cannot be renewed, and after a new Vault
// login (a lease ends with the token that read it) — then tell the
// connection pool to rotate. Current and Credentials are safe for
// concurrent use and cheap: they are asked for every new connection.
type DatabaseCredentials struct {
	vault    *Vault
	path     string
	valueKey string // names the password for the log redaction (the value hook)
	log      hclog.Logger
	metrics  dbMetrics

	current     atomic.Pointer[dbLease]
	logins      <-chan struct{}
	unsubscribe func()
	stop        context.CancelFunc
	done        chan struct{}

	mu         sync.Mutex
	onRotate   []func()
	superseded []*dbLease // replaced, left to end with their leases
	lastErr    error      // the last failed read of new credentials; nil after a success
	closed     bool

	closeOnce sync.Once
	closeErr  error
}

// DatabaseCredentials reads credentials from path ("database/creds/
// oauthrelay": the database engine's mount, creds, the role) with the
// relay's Vault login and keeps them current until Close. It fails when
// Vault refuses or cannot be reached; the error names the path, never a
// value.
func (v *Vault) DatabaseCredentials(ctx context.Context, path string) (*DatabaseCredentials, error) {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil, errors.New("database credentials: no Vault path (<mount>/creds/<role>)")
	}
	d := &DatabaseCredentials{vault: v, path: path, log: v.log.Named("database"), metrics: newDBMetrics(v.metrics, path), done: make(chan struct{}),
		// One key each: a reload's credentials for the same path run
		// beside their predecessor until it is closed.
		valueKey: fmt.Sprintf("vault:database:%s#%d", path, dbCredsSeq.Add(1))}
	d.logins, d.unsubscribe = v.subscribeLogins()
	l, err := d.read(ctx)
	if err != nil {
		d.unsubscribe()
		d.metrics.readFailures.Inc()
		return nil, err
	}
	v.holdValue(d.valueKey, l.password)
	d.current.Store(l)
	d.metrics.setExpiry(l.expiry)
	d.log.Info("read database credentials from Vault", "path", path, "user", l.user, "ttl", l.duration, "renewable", !l.renewAt.IsZero())
	runCtx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	go d.run(runCtx)
	return d, nil
}

var dbCredsSeq atomic.Int64

// Current returns the user name and password to open a connection with.
func (d *DatabaseCredentials) Current() (user, password string) {
	l := d.current.Load()
	return l.user, l.password
}

// Credentials is Current for a connection pool's hook that runs before
// each new connection (the store's Options.Credentials, pgxpool's
// BeforeConnect): it fails, saying why, once the credentials have expired
// and Vault has not given new ones, or after Close, instead of letting
// PostgreSQL refuse a password without a reason.
func (d *DatabaseCredentials) Credentials(context.Context) (user, password string, err error) {
	d.mu.Lock()
	closed, lastErr := d.closed, d.lastErr
	d.mu.Unlock()
	l := d.current.Load()
	switch {
	case closed:
		return "", "", fmt.Errorf("the database credentials from Vault %s were revoked: the relay is stopping", d.path)
	case time.Now().Before(l.expiry):
		return l.user, l.password, nil
	case lastErr != nil:
		return "", "", fmt.Errorf("the database credentials from Vault %s expired at %s and no new ones can be read: %w", d.path, l.expiry.Format(time.RFC3339), lastErr)
	}
	return "", "", fmt.Errorf("the database credentials from Vault %s expired at %s; new ones are being read", d.path, l.expiry.Format(time.RFC3339))
}

// OnRotate registers fn, called after each switch to new credentials
// (the store's RotateConnections: idle connections are closed, busy ones
// when they are released, and new ones use the new credentials). It runs
// on the renewal goroutine and should return quickly.
func (d *DatabaseCredentials) OnRotate(fn func()) {
	d.mu.Lock()
	d.onRotate = append(d.onRotate, fn)
	d.mu.Unlock()
}

// DatabaseCredentialsStatus describes the credentials in use, for health
// reports and tests; it holds no secret.
type DatabaseCredentialsStatus struct {
	Path      string
	User      string
	Expiry    time.Time // the lease's end, by the local clock
	Renewing  bool      // renewals still extend the lease
	LastError error     // the last failed read of new credentials, if the next has not succeeded
}

// Status reports the credentials in use.
func (d *DatabaseCredentials) Status() DatabaseCredentialsStatus {
	l := d.current.Load()
	d.mu.Lock()
	defer d.mu.Unlock()
	return DatabaseCredentialsStatus{Path: d.path, User: l.user, Expiry: l.expiry, Renewing: !l.renewAt.IsZero(), LastError: d.lastErr}
}

// Close stops the renewals and revokes the leases of the current and of
// the superseded credentials that have not ended, so that Vault drops
// their roles now rather than at their expiry. Close the connection pool
// first: new connections cannot log in afterwards. Without permission to
// revoke, Close returns Vault's refusal and the leases end on their own.
func (d *DatabaseCredentials) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.stop()
		<-d.done
		d.unsubscribe()
		d.closeErr = d.revokeAll()
		d.metrics.forget()
		d.vault.holdValue(d.valueKey, "")
		d.vault.holdValue(d.valueKey+" (previous)", "")
	})
	return d.closeErr
}

// revokeAll revokes every lease that has not ended yet.
func (d *DatabaseCredentials) revokeAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.mu.Lock()
	leases := liveLeases(append(d.superseded, d.current.Load()), time.Now())
	d.superseded = nil
	d.mu.Unlock()
	var errs []error
	for _, l := range leases {
		if err := d.vault.Client().Sys().RevokeWithContext(ctx, l.id); err != nil {
			d.vault.noteFailure(err)
			errs = append(errs, fmt.Errorf("revoking the lease of database user %s from Vault %s: %w", l.user, d.path, cleanError(err)))
			continue
		}
		d.log.Info("revoked the database credentials' lease", "path", d.path, "user", l.user)
	}
	return errors.Join(errs...)
}

// liveLeases returns the leases that end after now.
func liveLeases(leases []*dbLease, now time.Time) []*dbLease {
	return slices.DeleteFunc(slices.Clone(leases), func(l *dbLease) bool { return !l.expiry.After(now) })
}
