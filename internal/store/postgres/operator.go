package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// envelopeColumnsOf are the columns scanEnvelope reads, in its order, of
// the messages table as alias.
func envelopeColumnsOf(alias string) string {
	cols := []string{"id", "account", "listener", "client", "mail_from", "mail_params", "rcpts",
		"size", "header_id", "received", "expires", "next_attempt", "attempts", "last_reply", "state", "bounce"}
	for i, c := range cols {
		cols[i] = alias + "." + c
	}
	return strings.Join(cols, ", ")
}

var envelopeColumns = envelopeColumnsOf("messages")

// scanEnvelope reads envelopeColumns.
func scanEnvelope(row pgx.Row) (*store.Envelope, error) {
	var e store.Envelope
	var rcpts string
	err := row.Scan(&e.ID, &e.Account, &e.Listener, &e.Client, &e.From, &e.MailParams, &rcpts,
		&e.Size, &e.HeaderID, &e.Received, &e.Expires, &e.NextAttempt, &e.Attempts, &e.LastReply, &e.State, &e.Bounce)
	if err != nil {
		return nil, err
	}
	if len(e.MailParams) == 0 {
		e.MailParams = nil
	}
	if e.Rcpts, err = engine.DecodeRcpts(rcpts); err != nil {
		return nil, err
	}
	return &e, nil
}

func scanEnvelopes(rows pgx.Rows) ([]*store.Envelope, error) {
	defer rows.Close()
	var list []*store.Envelope
	for rows.Next() {
		e, err := scanEnvelope(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	return list, rows.Err()
}

// Get returns a queued (or held) message's envelope.
func (s *Store) Get(ctx context.Context, id string) (*store.Envelope, error) {
	var e *store.Envelope
	err := s.withConn(ctx, "reading the queue", func(ctx context.Context, c *pgxpool.Conn) error {
		var err error
		e, err = scanEnvelope(c.QueryRow(ctx, `SELECT `+envelopeColumns+` FROM messages WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		return s.readErr(ctx, "reading the queue", err)
	})
	return e, err
}

// List returns the queued messages f selects in ID order (arrival order).
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Envelope, error) {
	query, args, err := listQuery(f)
	if err != nil {
		return nil, err
	}
	var list []*store.Envelope
	err = s.withConn(ctx, "listing the queue", func(ctx context.Context, c *pgxpool.Conn) error {
		rows, err := c.Query(ctx, query, args...)
		if err == nil {
			list, err = scanEnvelopes(rows)
		}
		return s.readErr(ctx, "listing the queue", err)
	})
	return list, err
}

func listQuery(f store.Filter) (string, []any, error) {
	var w where
	switch f.State {
	case "":
	case store.StateQueued, store.StateHeld:
		w.add("state = ?", f.State)
	default:
		return "", nil, fmt.Errorf("store: list: state %q is not queued or held", f.State)
	}
	if f.Account != "" {
		w.add("account = ?", f.Account)
	}
	if f.After != "" {
		w.add("id > ?", f.After)
	}
	query := `SELECT ` + envelopeColumns + ` FROM messages` + w.sql() + ` ORDER BY id` // the primary key: a page reads only its rows
	if f.Limit > 0 {
		w.args = append(w.args, f.Limit)
		query += ` LIMIT $` + strconv.Itoa(len(w.args))
	}
	return query, w.args, nil
}

// Hold stops attempts on a message until Release. Holding a held
// message changes nothing and adds no event. A lease in progress is kept:
// the attempt under way may still finish.
func (s *Store) Hold(ctx context.Context, id string) error {
	return s.setState(ctx, id, store.StateQueued, store.StateHeld, store.EventHeld)
}

// Release makes a held message queued again.
func (s *Store) Release(ctx context.Context, id string) error {
	return s.setState(ctx, id, store.StateHeld, store.StateQueued, store.EventReleased)
}

// setState moves id from state from to state to, with its history
// record and an event, in one statement.
func (s *Store) setState(ctx context.Context, id, from, to, event string) error {
	return s.changeOne(ctx, id, `WITH changed AS (
			UPDATE messages SET state = $2 WHERE id = $1 AND state = $3 RETURNING id),
		h AS (UPDATE history SET state = $2, updated = $4 WHERE id IN (SELECT id FROM changed)),
		e AS (INSERT INTO events (msg_id, at, type, rcpt, reply) SELECT id, $4, $5, '', '' FROM changed)
		SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1)`, id, to, from, time.Now(), event)
}

// Retry makes a message due at now. A held message stays held: an
// operator's hold is lifted by Release only. A Retry while an attempt
// runs keeps the message due after that attempt's Finish.
func (s *Store) Retry(ctx context.Context, id string, now time.Time) error {
	return s.changeOne(ctx, id, `WITH changed AS (
			UPDATE messages SET next_attempt = $2::timestamptz,
				retried = CASE WHEN lease_owner <> '' THEN $2::timestamptz END
			WHERE id = $1 RETURNING id),
		h AS (UPDATE history SET updated = $2::timestamptz WHERE id IN (SELECT id FROM changed)),
		e AS (INSERT INTO events (msg_id, at, type, rcpt, reply) SELECT id, $2::timestamptz, $3, '', '' FROM changed)
		SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1)`, id, now, store.EventRetry)
}

// changeOne runs an operator's statement about message id, which reports
// whether the message is in the queue: store.ErrNotFound when it is not.
func (s *Store) changeOne(ctx context.Context, id, query string, args ...any) error {
	return s.withConn(ctx, "updating the queue", func(ctx context.Context, c *pgxpool.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, query, args...).Scan(&exists); err != nil {
			return s.readErr(ctx, "updating the queue", err)
		}
		if !exists {
			return fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		return nil
	})
}

// Delete removes a message and its body from the queue; its history
// stays, in state deleted. A worker holding its lease gets ErrLeaseLost.
func (s *Store) Delete(ctx context.Context, id string) error {
	now := time.Now()
	return s.inTx(ctx, "deleting", func(ctx context.Context, tx pgx.Tx) error {
		var keys []int64
		err := tx.QueryRow(ctx, `SELECT `+keysOf("m.id")+` FROM messages m WHERE id = $1 FOR UPDATE`, id).Scan(&keys)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		if err != nil {
			return s.readErr(ctx, "deleting", err)
		}
		b := &pgx.Batch{}
		queueRemoval(b, id, keys)
		queueHistoryState(b, id, store.StateDeleted, now)
		queueEvents(b, []*store.Event{{ID: id, At: now, Type: store.EventDeleted}})
		return s.sendBatch(ctx, tx, "deleting", b)
	})
}

// Stats counts the queue by state and account.
func (s *Store) Stats(ctx context.Context) (*store.Stats, error) {
	st := &store.Stats{Depth: map[store.DepthKey]int{}}
	err := s.withConn(ctx, "queue stats", func(ctx context.Context, c *pgxpool.Conn) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT state, account, count(*) FROM messages GROUP BY state, account`).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k store.DepthKey
				var n int
				if err := rows.Scan(&k.State, &k.Account, &n); err != nil {
					return err
				}
				st.Depth[k] = n
			}
			return rows.Err()
		})
		b.Queue(`SELECT min(received) FROM messages WHERE state = 'queued'`).QueryRow(func(row pgx.Row) error {
			var oldest *time.Time
			err := row.Scan(&oldest)
			if oldest != nil {
				st.Oldest = *oldest
			}
			return err
		})
		return s.readErr(ctx, "queue stats", c.SendBatch(ctx, b).Close())
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Ping commits a write (the heartbeat row): it proves the database takes
// writes, which a read-only standby, a full disk or a revoked privilege
// refuse.
func (s *Store) Ping(ctx context.Context) error {
	return s.withConn(ctx, "ping", func(ctx context.Context, c *pgxpool.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO heartbeat (id, at) VALUES (1, now())
			ON CONFLICT (id) DO UPDATE SET at = excluded.at`)
		return s.readErr(ctx, "ping", err)
	})
}
