package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// claimSQL leases up to $2 due messages to $4 until $5, in one statement.
// It goes account by account along the messages_due index (a recursive
// query finds the accounts with claimable messages, one seek each), takes
// each account's oldest due messages whose lease is not live, skipping
// rows another claim or a Finish holds (FOR UPDATE SKIP LOCKED), and
// keeps the oldest of all. A row another instance claimed after this
// statement's snapshot is checked again once locked, so a message is
// never handed to two live owners. An owner taking its own expired lease
// back (its attempt may still run) keeps an operator's Retry made during
// that attempt.
var claimSQL = `WITH RECURSIVE accounts (name) AS (
		(SELECT account FROM messages WHERE state = 'queued' AND pending > 0 ORDER BY account LIMIT 1)
		UNION ALL
		SELECT (SELECT account FROM messages
			WHERE state = 'queued' AND pending > 0 AND account > a.name ORDER BY account LIMIT 1)
		FROM accounts a WHERE a.name IS NOT NULL),
	due AS (
		SELECT d.id, d.next_attempt, d.received
		FROM accounts a CROSS JOIN LATERAL (
			SELECT id, next_attempt, received FROM messages
			WHERE state = 'queued' AND pending > 0 AND account = a.name AND next_attempt <= $1
				AND (lease_until IS NULL OR lease_until <= $1)
			ORDER BY next_attempt LIMIT $2
			FOR UPDATE SKIP LOCKED) d
		WHERE a.name IS NOT NULL AND a.name <> ALL ($3::text[])
		ORDER BY d.next_attempt, d.received, d.id
		LIMIT $2)
	UPDATE messages m SET lease_owner = $4, lease_until = $5,
		retried = CASE WHEN m.lease_owner = $4 THEN m.retried END
	FROM due WHERE m.id = due.id
	RETURNING ` + envelopeColumnsOf("m")

// Claim leases up to limit due messages to owner until now+lease, oldest
// next attempt first.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration, skip []string) ([]*store.Claimed, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	if owner == "" || lease <= 0 {
		return nil, errBadClaim
	}
	if limit <= 0 {
		return nil, nil
	}
	until := now.Add(lease).Truncate(time.Microsecond) // as stored
	var claimed []*store.Claimed
	err := s.withConn(ctx, "claiming", func(ctx context.Context, c *pgxpool.Conn) error {
		rows, err := c.Query(ctx, claimSQL, now, limit, textArray(skip), owner, until)
		if err != nil {
			return s.readErr(ctx, "claiming", err)
		}
		envs, err := scanEnvelopes(rows)
		if err != nil {
			return s.readErr(ctx, "claiming", err)
		}
		for _, e := range envs {
			claimed = append(claimed, &store.Claimed{Envelope: *e, Owner: owner, LeaseUntil: until})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	engine.SortClaimed(claimed)
	return claimed, nil
}

// Extend renews owner's lease on id until until. A lease that expired but
// was not taken over is still the owner's.
func (s *Store) Extend(ctx context.Context, id, owner string, until time.Time) error {
	if err := s.readable(); err != nil {
		return err
	}
	if owner == "" {
		return errNoOwner(id)
	}
	return s.withConn(ctx, "extending a lease", func(ctx context.Context, c *pgxpool.Conn) error {
		var exists, extended bool
		err := c.QueryRow(ctx, `WITH x AS (
				UPDATE messages SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1), EXISTS (SELECT 1 FROM x)`,
			id, owner, until).Scan(&exists, &extended)
		if err != nil {
			return s.readErr(ctx, "extending a lease", err)
		}
		if !extended {
			return leaseLost(id, exists)
		}
		return nil
	})
}

// leaseLost is the error for a lease on id the caller does not hold; it
// also matches store.ErrNotFound when the message is gone altogether
// (delivered or deleted by an operator).
func leaseLost(id string, exists bool) error {
	if !exists {
		return fmt.Errorf("%w: %w: %s", store.ErrLeaseLost, store.ErrNotFound, id)
	}
	return fmt.Errorf("%w: %s", store.ErrLeaseLost, id)
}

// ReleaseLeases drops every lease owner holds.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) error {
	if err := s.readable(); err != nil || owner == "" {
		return err
	}
	return s.withConn(ctx, "releasing leases", func(ctx context.Context, c *pgxpool.Conn) error {
		_, err := c.Exec(ctx, `UPDATE messages SET lease_owner = '', lease_until = NULL WHERE lease_owner = $1`, owner)
		return s.readErr(ctx, "releasing leases", err)
	})
}

// Finish records an attempt and releases owner's lease on id. The
// message keeps its state (a message held during the attempt stays held)
// unless no recipient is pending any more: then it leaves the queue, its
// body with it. The message's row stays locked from the lease check to
// the commit, so a claim, an operator's Delete or another Finish waits or
// passes it by.
func (s *Store) Finish(ctx context.Context, id, owner string, res store.Result) error {
	if err := s.readable(); err != nil {
		return err
	}
	if owner == "" {
		return errNoOwner(id)
	}
	if res.At.IsZero() {
		res.At = time.Now()
	}
	res = cleanResult(res)
	return s.inTx(ctx, "finishing", func(ctx context.Context, tx pgx.Tx) error {
		e, keys, err := s.leased(ctx, tx, id, owner)
		if err != nil {
			return err
		}
		events, err := engine.ApplyResult(e, &res)
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueEvents(b, events)
		if engine.PendingCount(e.Rcpts) == 0 {
			queueRemoval(b, id, keys)
			queueHistoryState(b, id, engine.FinalState(e.Rcpts), res.At)
		} else if err := queueRequeue(b, e, &res); err != nil {
			return err
		}
		return s.sendBatch(ctx, tx, "finishing", b)
	})
}

// leased reads, and locks, what Finish changes of id (recipients,
// attempts, last reply) and its body's data keys, if owner holds its
// lease.
func (s *Store) leased(ctx context.Context, tx pgx.Tx, id, owner string) (*store.Envelope, []int64, error) {
	e := &store.Envelope{ID: id}
	var rcpts string
	var keys []int64
	err := tx.QueryRow(ctx, `SELECT rcpts, attempts, last_reply, `+keysOf("m.id")+`
		FROM messages m WHERE id = $1 AND lease_owner = $2 FOR UPDATE`, id, owner).
		Scan(&rcpts, &e.Attempts, &e.LastReply, &keys)
	if errors.Is(err, pgx.ErrNoRows) {
		exists, err := messageExists(ctx, tx, id)
		if err != nil {
			return nil, nil, s.readErr(ctx, "finishing", err)
		}
		return nil, nil, leaseLost(id, exists)
	}
	if err != nil {
		return nil, nil, s.readErr(ctx, "finishing", err)
	}
	if e.Rcpts, err = engine.DecodeRcpts(rcpts); err != nil {
		return nil, nil, err
	}
	return e, keys, nil
}

func messageExists(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string) (bool, error) {
	var exists bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1)`, id).Scan(&exists)
	return exists, err
}

// keysOf is the expression listing the data keys of a message's chunks.
func keysOf(msgID string) string {
	return `ARRAY(SELECT DISTINCT key_id FROM chunks WHERE msg_id = ` + msgID + ` AND key_id IS NOT NULL)`
}

// queueRemoval queues the statements that delete a message and its body
// (the chunks go with it by foreign key), then the wrapped keys of keys
// no chunk refers to any more.
func queueRemoval(b *pgx.Batch, id string, keys []int64) {
	b.Queue(`DELETE FROM messages WHERE id = $1`, id)
	if len(keys) > 0 {
		b.Queue(`DELETE FROM data_keys k WHERE k.id = ANY ($1)
			AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.key_id = k.id)`, keys)
	}
}

// queueHistoryState queues moving a message's record to state.
func queueHistoryState(b *pgx.Batch, id, state string, at time.Time) {
	b.Queue(`UPDATE history SET state = $1, updated = $2 WHERE id = $3`, state, at, id)
}

// queueRequeue queues storing the new recipient states of a message
// still pending and releasing the lease. An operator's Retry during the
// attempt keeps the message due.
func queueRequeue(b *pgx.Batch, e *store.Envelope, res *store.Result) error {
	rcpts, err := engine.EncodeRcpts(e.Rcpts)
	if err != nil {
		return err
	}
	b.Queue(`UPDATE messages SET rcpts = $1, pending = $2, attempts = $3, last_reply = $4,
		next_attempt = CASE WHEN retried IS NOT NULL THEN LEAST($5, retried) ELSE $5 END,
		retried = NULL, lease_owner = '', lease_until = NULL WHERE id = $6`,
		rcpts, engine.PendingCount(e.Rcpts), e.Attempts, e.LastReply, res.NextAttempt, e.ID)
	b.Queue(`UPDATE history SET updated = $1 WHERE id = $2`, res.At, e.ID)
	return nil
}

// cleanResult cleans the free text of a result (providers' replies).
func cleanResult(res store.Result) store.Result {
	res.Reply = cleanText(res.Reply)
	if len(res.Rcpts) == 0 {
		return res
	}
	rcpts := make(map[string]store.Recipient, len(res.Rcpts))
	for addr, r := range res.Rcpts {
		r.LastReply = cleanText(r.LastReply)
		rcpts[addr] = r
	}
	res.Rcpts = rcpts
	return res
}
