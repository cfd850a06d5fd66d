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

// pruneBatch bounds the history records one Prune statement deletes, so
// that a large prune never holds many locks or a long transaction.
const pruneBatch = 500

// historyColumns are the columns scanRecord reads, in its order.
const historyColumns = `id, mode, listener, client, account, mail_from, rcpts, size,
	header_id, subject, received, state, updated`

const insertHistorySQL = `INSERT INTO history (` + historyColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`

func historyArgs(r *store.Record) []any {
	return []any{r.ID, r.Mode, r.Listener, r.Client, r.Account, r.From, textArray(r.Rcpts),
		r.Size, r.HeaderID, r.Subject, r.Received, r.State, r.Updated}
}

// insertEvent is the statement that appends e to its message's trail.
func insertEvent(req int, e *store.Event) stmt {
	return stmt{req: req, sql: `INSERT INTO events (msg_id, at, type, rcpt, reply) VALUES ($1, $2, $3, $4, $5)`,
		args: []any{e.ID, e.At, e.Type, e.Rcpt, e.Reply}}
}

// queueEvents queues the statements appending events to b.
func queueEvents(b *pgx.Batch, events []*store.Event) {
	for _, e := range events {
		st := insertEvent(-1, e)
		b.Queue(st.sql, st.args...)
	}
}

// Record adds or replaces history records and appends events in one
// commit of the writer; records and events without a time get the
// current one.
func (s *Store) Record(ctx context.Context, recs []*store.Record, events []*store.Event) error {
	if err := s.readable(); err != nil {
		return err
	}
	recs, events, err := engine.NormalizeHistory(recs, events, time.Now())
	if err != nil {
		return err
	}
	if len(recs)+len(events) == 0 {
		return nil
	}
	for _, r := range recs {
		cleanRecord(r)
	}
	for _, e := range events {
		cleanEvent(e)
	}
	return s.submit(ctx, &request{recs: recs, events: events})
}

// record queues request i's records and events.
func (p *pipe) record(i int, r *request) {
	for _, rec := range r.recs {
		p.queue(stmt{req: i, args: historyArgs(rec), sql: insertHistorySQL + `
			ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, listener = excluded.listener,
				client = excluded.client, account = excluded.account, mail_from = excluded.mail_from,
				rcpts = excluded.rcpts, size = excluded.size, header_id = excluded.header_id,
				subject = excluded.subject, received = excluded.received, state = excluded.state, updated = excluded.updated`})
	}
	for _, e := range r.events {
		p.queue(insertEvent(i, e))
	}
}

// History returns a message's record and its events, oldest first (equal
// times in the order they were written).
func (s *Store) History(ctx context.Context, id string) (rec *store.Record, events []*store.Event, err error) {
	err = s.withConn(ctx, "reading history", func(ctx context.Context, c *pgxpool.Conn) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT `+historyColumns+` FROM history WHERE id = $1`, id).QueryRow(func(row pgx.Row) error {
			rec, err = scanRecord(row)
			return err
		})
		b.Queue(`SELECT at, type, rcpt, reply FROM events WHERE msg_id = $1 ORDER BY at, seq`, id).Query(func(rows pgx.Rows) error {
			events, err = scanEvents(id, rows)
			return err
		})
		return c.SendBatch(ctx, b).Close()
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, s.readErr(ctx, "reading history", err)
	}
	return rec, events, nil
}

func scanRecord(row pgx.Row) (*store.Record, error) {
	var r store.Record
	err := row.Scan(&r.ID, &r.Mode, &r.Listener, &r.Client, &r.Account, &r.From, &r.Rcpts, &r.Size,
		&r.HeaderID, &r.Subject, &r.Received, &r.State, &r.Updated)
	if err != nil {
		return nil, err
	}
	if len(r.Rcpts) == 0 {
		r.Rcpts = nil
	}
	return &r, nil
}

func scanEvents(id string, rows pgx.Rows) ([]*store.Event, error) {
	var events []*store.Event
	for rows.Next() {
		e := &store.Event{ID: id}
		if err := rows.Scan(&e.At, &e.Type, &e.Rcpt, &e.Reply); err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

// Prune deletes the history of messages no longer queued and last updated
// before before, pruneBatch records per statement, then the wrapped keys
// no chunk refers to any more (those of batches whose messages all went
// while another instance removed a message of the same batch).
//
// Records are found by the time they were received, which comes before
// any update: the history's indexes leave out the columns a delivery
// changes (see 0001_store.sql).
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		var n int64
		err := s.withConn(ctx, "pruning", func(ctx context.Context, c *pgxpool.Conn) error {
			tag, err := c.Exec(ctx, `WITH gone AS (
					SELECT id FROM history h
					WHERE received < $1 AND updated < $1 AND state NOT IN ('queued', 'held')
					AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = h.id)
					LIMIT $2 FOR UPDATE SKIP LOCKED),
				events_gone AS (DELETE FROM events e USING gone WHERE e.msg_id = gone.id)
				DELETE FROM history h USING gone WHERE h.id = gone.id`, before, pruneBatch)
			n = tag.RowsAffected()
			return s.readErr(ctx, "pruning", err)
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < pruneBatch {
			break
		}
	}
	err := s.withConn(ctx, "pruning keys", func(ctx context.Context, c *pgxpool.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM data_keys k WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.key_id = k.id)`)
		return s.readErr(ctx, "pruning keys", err)
	})
	return total, err
}
