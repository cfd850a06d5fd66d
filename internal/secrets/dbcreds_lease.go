package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
)

// dbLease is one set of database credentials and its lease. It is never
// changed once stored: a renewal stores a changed copy, so that readers
// of DatabaseCredentials.current need no lock.
type dbLease struct {
	id             string
	user, password string
	duration       time.Duration // granted at the read; asked for at each renewal
	expiry         time.Time     // by the local clock
	renewAt        time.Time     // zero once renewals cannot extend the lease
	replaceAt      time.Time     // when to read new credentials (set when renewAt is zero)
	replaceReason  string        // why, for the metrics and logs
	readWith       string        // the Vault token that read it: the lease ends with that token
}

// leaseOf takes the credentials out of a read of <mount>/creds/<role>.
func leaseOf(s *vault.Secret, token string, now time.Time) (*dbLease, error) {
	if s == nil {
		return nil, errors.New("Vault has nothing there: is the database secrets engine mounted there, with this role?")
	}
	user, _ := s.Data["username"].(string)
	password, _ := s.Data["password"].(string)
	if user == "" || password == "" {
		return nil, errors.New("Vault's answer holds no username and password: not a database secrets engine role")
	}
	if s.LeaseID == "" || s.LeaseDuration <= 0 {
		return nil, errors.New("the credentials have no lease: only dynamic roles (<mount>/creds/<role>) are supported, not static roles")
	}
	d := time.Duration(s.LeaseDuration) * time.Second
	l := dbLease{id: s.LeaseID, user: user, password: password, duration: d, readWith: token}
	return l.extended(now, d, s.Renewable), nil
}

// extended returns the lease after Vault granted it granted at now. It is
// renewed again at two thirds of the grant, as Vault's own lifetime
// watcher does. When Vault granted less than the lease's duration (the
// role's max TTL is near) or will not renew it, new credentials are read
// a third of the duration before the lease ends: the pool then rotates
// while the old credentials still log in, so that a connection being
// opened with them as they are replaced still succeeds.
func (l dbLease) extended(now time.Time, granted time.Duration, renewable bool) *dbLease {
	l.expiry = now.Add(granted)
	switch {
	case !renewable:
		return l.replacing(now, l.expiry.Add(-l.duration/3), "not_renewable")
	case granted < l.duration:
		return l.replacing(now, l.expiry.Add(-l.duration/3), "max_ttl")
	}
	l.renewAt = now.Add(granted * 2 / 3)
	return &l
}

// replacing returns the lease set to be replaced at at (now at the
// earliest).
func (l dbLease) replacing(now, at time.Time, reason string) *dbLease {
	l.renewAt = time.Time{}
	l.replaceAt, l.replaceReason = at, reason
	if at.Before(now) {
		l.replaceAt = now
	}
	return &l
}

// next is when the lease needs its next renewal or replacement.
func (l *dbLease) next() time.Time {
	if l.renewAt.IsZero() {
		return l.replaceAt
	}
	return l.renewAt
}

// run renews and replaces the credentials until ctx ends.
func (d *DatabaseCredentials) run(ctx context.Context) {
	defer close(d.done)
	for {
		l := d.current.Load()
		t := time.NewTimer(time.Until(l.next()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.logins:
			t.Stop()
			d.afterLogin(l)
		case <-t.C:
			if l.renewAt.IsZero() {
				d.replace(ctx, l)
			} else {
				d.renew(ctx, l)
			}
		}
	}
}

// afterLogin replaces credentials read with a token the login replaced:
// Vault revokes a token's leases when the token ends, and the relay's
// old token ends soon after a new login (its max TTL, or it failed).
func (d *DatabaseCredentials) afterLogin(l *dbLease) {
	if d.vault.Client().Token() == l.readWith || l.replaceReason == "relogin" {
		return // the same token (a static token looked up again)
	}
	d.log.Info("the relay logged in to Vault again: the database credentials' lease ends with the previous token; reading new ones", "path", d.path, "user", l.user)
	now := time.Now()
	d.current.Store(l.replacing(now, now, "relogin"))
}

// renew asks Vault to extend the lease by its duration.
func (d *DatabaseCredentials) renew(ctx context.Context, l *dbLease) {
	s, err := d.vault.Client().Sys().RenewWithContext(ctx, l.id, int(l.duration/time.Second))
	if err == nil && s == nil {
		err = errors.New("Vault's answer holds no lease")
	}
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d.vault.noteFailure(err)
		d.metrics.renewFailures.Inc()
		d.log.Warn("cannot renew the database credentials' lease; reading new credentials", "path", d.path, "user", l.user, "expires_in", l.expiry.Sub(now).Round(time.Second), "error", cleanError(err))
		d.current.Store(l.replacing(now, now, "renewal_failed"))
		return
	}
	d.vault.noteUp()
	n := l.extended(now, time.Duration(s.LeaseDuration)*time.Second, s.Renewable)
	d.current.Store(n)
	d.metrics.renewals.Inc()
	d.metrics.setExpiry(n.expiry)
	if n.renewAt.IsZero() {
		d.log.Info("the database credentials' lease cannot be extended further; new credentials will be read before it ends", "path", d.path, "user", n.user, "expires", logTime(n.expiry), "replace_at", logTime(n.replaceAt), "reason", n.replaceReason)
		return
	}
	d.log.Debug("renewed the database credentials' lease", "path", d.path, "user", n.user, "ttl", time.Duration(s.LeaseDuration)*time.Second)
}

// replace reads new credentials, retrying with jittered backoff until it
// succeeds or ctx ends, and switches to them.
func (d *DatabaseCredentials) replace(ctx context.Context, old *dbLease) {
	delay, ceiling := retryDelays(old.duration)
	for {
		n, err := d.read(ctx)
		if err == nil {
			d.switchTo(old, n)
			return
		}
		if ctx.Err() != nil {
			return
		}
		d.metrics.readFailures.Inc()
		d.mu.Lock()
		d.lastErr = err
		d.mu.Unlock()
		if left := time.Until(old.expiry); left > 0 {
			d.log.Warn("cannot read new database credentials; the current ones stay in use until they expire", "path", d.path, "expires_in", left.Round(time.Second), "retry_in", delay, "error", err)
		} else {
			d.log.Error("the database credentials have expired and Vault gives no new ones: new database connections fail until it does", "path", d.path, "expired", logTime(old.expiry), "retry_in", delay, "error", err)
		}
		if !sleep(ctx, jitter(delay)) {
			return
		}
		delay = min(delay*2, ceiling)
	}
}

// retryDelays are the first and the longest wait between failed reads of
// new credentials: short against the lease's duration, so that a
// short-lived lease is replaced soon after Vault is back.
func retryDelays(duration time.Duration) (first, ceiling time.Duration) {
	first = min(max(duration/20, 100*time.Millisecond), time.Second)
	ceiling = min(max(duration/4, first), 30*time.Second)
	return first, ceiling
}

// read reads new credentials with the relay's current Vault token.
func (d *DatabaseCredentials) read(ctx context.Context) (*dbLease, error) {
	c := d.vault.Client()
	token := c.Token()
	s, err := c.Logical().ReadWithContext(ctx, d.path)
	if err != nil {
		d.vault.noteFailure(err)
		return nil, fmt.Errorf("database credentials from Vault %s: %w", d.path, cleanError(err))
	}
	d.vault.noteUp()
	l, err := leaseOf(s, token, time.Now())
	if err != nil {
		return nil, fmt.Errorf("database credentials from Vault %s: %w", d.path, err)
	}
	return l, nil
}

// switchTo makes n the current credentials and tells the pool. The old
// lease is not revoked: connections opened with it may still be running
// a transaction (the pool closes them as they are released, and nothing
// tells when the last one is), and it ends on its own within a third of
// the lease duration — replacement starts when no more than that is left
// — or with the token that read it. Vault then runs the role's revocation
// statements; PostgreSQL keeps a dropped role's sessions running.
func (d *DatabaseCredentials) switchTo(old, n *dbLease) {
	// The redaction learns the new password before anything can use it;
	// the old one stays valid, and redacted, until its lease ends.
	d.vault.holdValue(d.valueKey+" (previous)", old.password)
	d.vault.holdValue(d.valueKey, n.password)
	d.current.Store(n)
	d.mu.Lock()
	d.lastErr = nil
	d.superseded = append(liveLeases(d.superseded, time.Now()), old)
	hooks := slices.Clone(d.onRotate)
	d.mu.Unlock()
	d.metrics.rotations.WithLabelValues(old.replaceReason).Inc()
	d.metrics.setExpiry(n.expiry)
	d.log.Info("new database credentials from Vault; the connection pool rotates (connections of the previous user finish their work)",
		"path", d.path, "reason", old.replaceReason, "user", n.user, "expires", logTime(n.expiry), "previous_user", old.user, "previous_expires", logTime(old.expiry))
	for _, fn := range hooks {
		fn()
	}
}

// logTime shows a lease's time in logs: UTC to the millisecond, without
// the monotonic clock reading.
func logTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// dbMetrics are the collectors of one Vault path's credentials.
type dbMetrics struct {
	m                       *Metrics
	path                    string
	owner                   *int // identifies these credentials as the expiry gauge's owner
	renewals, renewFailures prometheus.Counter
	readFailures            prometheus.Counter
	rotations               *prometheus.CounterVec
}

func newDBMetrics(m *Metrics, path string) dbMetrics {
	dm := dbMetrics{
		m: m, path: path, owner: new(int),
		renewals:      m.dbRenewals.WithLabelValues(path, "success"),
		renewFailures: m.dbRenewals.WithLabelValues(path, "failure"),
		readFailures:  m.dbReadFailures.WithLabelValues(path),
		rotations:     m.dbRotations.MustCurryWith(prometheus.Labels{"path": path}),
	}
	m.dbMu.Lock()
	m.dbExpiryOwner[path] = dm.owner
	m.dbMu.Unlock()
	return dm
}

// setExpiry shows when the lease in use ends, unless newer credentials
// for the same path took over the gauge.
func (dm dbMetrics) setExpiry(t time.Time) {
	dm.m.dbMu.Lock()
	defer dm.m.dbMu.Unlock()
	if dm.m.dbExpiryOwner[dm.path] == dm.owner {
		dm.m.dbLeaseExpiry.WithLabelValues(dm.path).Set(unixSeconds(t))
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// forget drops the expiry of credentials no longer in use, which would
// otherwise look like a lease about to run out.
func (dm dbMetrics) forget() {
	dm.m.dbMu.Lock()
	defer dm.m.dbMu.Unlock()
	if dm.m.dbExpiryOwner[dm.path] == dm.owner {
		delete(dm.m.dbExpiryOwner, dm.path)
		dm.m.dbLeaseExpiry.DeleteLabelValues(dm.path)
	}
}
