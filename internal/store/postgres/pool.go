package postgres

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// connectTimeout bounds a connection attempt when the DSN sets none
// (connect_timeout): a database host that does not answer must not keep
// an enqueue waiting for the operating system's TCP timeout.
const connectTimeout = 10 * time.Second

// newPool configures the pool: every new connection logs in with the
// current credentials, takes the role and commits synchronously. It
// connects lazily; migrate makes the first connection.
func (s *Store) newPool(ctx context.Context, dsn string, opts Options) (*pgxpool.Pool, error) {
	s.secrets.addDSN(dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// Not wrapped: pgx's error keeps the DSN, password and all.
		return nil, fmt.Errorf("store: the PostgreSQL DSN cannot be parsed: %s", s.secrets.scrub(err.Error()))
	}
	s.secrets.add(cfg.ConnConfig.Password)
	cfg.MaxConns = DefaultMaxConns
	if opts.MaxConns > 0 {
		cfg.MaxConns = int32(opts.MaxConns)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if opts.Credentials != nil {
		cfg.BeforeConnect = s.credentials(opts.Credentials)
	}
	cfg.AfterConnect = s.prepareSession(opts.Role)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, s.mapErr("connecting", err)
	}
	return pool, nil
}

// credentials sets the user and password of each new connection from
// get, and remembers the password so that no error ever shows it.
func (s *Store) credentials(get func(context.Context) (string, string, error)) func(context.Context, *pgx.ConnConfig) error {
	return func(ctx context.Context, cc *pgx.ConnConfig) error {
		user, password, err := get(ctx)
		if err != nil {
			return fmt.Errorf("getting the database credentials: %w", err)
		}
		s.secrets.add(password)
		cc.User, cc.Password = user, password
		return nil
	}
}

// prepareSession runs on every new connection: SET ROLE when a role is
// configured, and synchronous commits. A commit must be durable before
// Enqueue returns (the client gets 250 then), so a session whose
// synchronous_commit is off (a server or database default) turns it on;
// the other settings (local, remote_write, remote_apply) are kept.
func (s *Store) prepareSession(role string) func(context.Context, *pgx.Conn) error {
	var warned atomic.Bool
	return func(ctx context.Context, c *pgx.Conn) error {
		if role != "" {
			if _, err := c.Exec(ctx, "SET ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("SET ROLE %s: %w", role, err)
			}
		}
		var turnedOn bool
		err := c.QueryRow(ctx, `SELECT count(set_config('synchronous_commit', 'on', false)) > 0
			FROM (SELECT 1) x WHERE current_setting('synchronous_commit') = 'off'`).Scan(&turnedOn)
		if err != nil {
			return err
		}
		if turnedOn && !warned.Swap(true) {
			s.log.Warn("the database's synchronous_commit is off: the store turns it on in its sessions, as a queued message must be durable before the client's 250")
		}
		return nil
	}
}
