package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// pruneBatch bounds the history records one Prune transaction deletes, so
// that a large prune never holds the writer for long.
const pruneBatch = 500

// historyColumns are the columns scanRecord reads, in its order.
const historyColumns = `id, mode, listener, client, account, mail_from, rcpts, size,
	header_id, subject, received, state, updated`

func historyArgs(r *store.Record) []any {
	return []any{r.ID, r.Mode, r.Listener, r.Client, r.Account, r.From, encodeStrings(r.Rcpts),
		r.Size, r.HeaderID, r.Subject, unixNano(r.Received), r.State, unixNano(r.Updated)}
}

// insertHistory adds record id, its historyArgs given; a record with its
// ID is an error.
func (b *batch) insertHistory(id string, args []any) error {
	_, err := b.execResult(`INSERT INTO history (`+historyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	if isConstraint(err) {
		return fmt.Errorf("%w: history record %s", engine.ErrDuplicate, id)
	}
	return mapErr("writing history", err)
}

// upsertHistory adds a record or replaces the one with its ID.
func (b *batch) upsertHistory(r *store.Record) error {
	return b.execOp("writing history", `INSERT INTO history (`+historyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, listener = excluded.listener,
			client = excluded.client, account = excluded.account, mail_from = excluded.mail_from,
			rcpts = excluded.rcpts, size = excluded.size, header_id = excluded.header_id,
			subject = excluded.subject, received = excluded.received, state = excluded.state, updated = excluded.updated`,
		historyArgs(r)...)
}

// setHistoryState moves a queued message's record to state.
func (b *batch) setHistoryState(id, state string, at time.Time) error {
	return b.execOp("writing history", `UPDATE history SET state = ?, updated = ? WHERE id = ?`,
		state, unixNano(at), id)
}

// insertEvent appends e to its message's events.
func (b *batch) insertEvent(e *store.Event) error {
	// The next seq of the message, under the write lock: another
	// process's writer (`oauthrelay queue`) numbers from the same rows.
	return b.execOp("writing history", `INSERT INTO events (msg_id, seq, at, type, rcpt, reply)
		VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE msg_id = ?1), ?2, ?3, ?4, ?5)`,
		e.ID, unixNano(e.At), e.Type, e.Rcpt, e.Reply)
}

// insertFirstEvent appends e, the first event of a new message, as seq 1
// without looking for the message's last event (about a fifth of the
// cost of an event). Should events of its ID exist all the same (Record
// may write events before their record), it is numbered after them as
// insertEvent does.
func (b *batch) insertFirstEvent(e *store.Event) error {
	res, err := b.execResult(`INSERT INTO events (msg_id, seq, at, type, rcpt, reply)
		VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		e.ID, unixNano(e.At), e.Type, e.Rcpt, e.Reply)
	if err != nil {
		return mapErr("writing history", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return mapErr("writing history", err)
	}
	if n == 0 {
		return b.insertEvent(e)
	}
	return nil
}

// Record adds or replaces history records and appends events in one
// commit; records and events without a time get the current one.
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
	return s.submit(ctx, &request{
		items: len(recs) + len(events),
		run: func(b *batch) error {
			for _, r := range recs {
				if err := b.upsertHistory(r); err != nil {
					return err
				}
			}
			for _, e := range events {
				if err := b.insertEvent(e); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

// History returns a message's record and its events, oldest first (equal
// times in the order they were written).
func (s *Store) History(ctx context.Context, id string) (*store.Record, []*store.Event, error) {
	if err := s.readable(); err != nil {
		return nil, nil, err
	}
	rec, err := s.readRecord(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	events, err := s.readEvents(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return rec, events, nil
}

func (s *Store) readRecord(ctx context.Context, id string) (*store.Record, error) {
	r, err := scanRecord(s.rdb.QueryRowContext(ctx, `SELECT `+historyColumns+` FROM history WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	if err != nil {
		return nil, readErr(ctx, "reading history", err)
	}
	return r, nil
}

// scanRecord reads historyColumns.
func scanRecord(sc scanner) (*store.Record, error) {
	var (
		r                 store.Record
		rcpts             string
		received, updated int64
	)
	err := sc.Scan(&r.ID, &r.Mode, &r.Listener, &r.Client, &r.Account, &r.From, &rcpts, &r.Size,
		&r.HeaderID, &r.Subject, &received, &r.State, &updated)
	if err != nil {
		return nil, err
	}
	if r.Rcpts, err = decodeStrings(rcpts); err != nil {
		return nil, err
	}
	r.Received, r.Updated = fromUnixNano(received), fromUnixNano(updated)
	return &r, nil
}

func (s *Store) readEvents(ctx context.Context, id string) ([]*store.Event, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT at, type, rcpt, reply FROM events
		WHERE msg_id = ? ORDER BY at, seq`, id)
	if err != nil {
		return nil, readErr(ctx, "reading history", err)
	}
	defer rows.Close()
	var events []*store.Event
	for rows.Next() {
		e := &store.Event{ID: id}
		var at int64
		if err := rows.Scan(&at, &e.Type, &e.Rcpt, &e.Reply); err != nil {
			return nil, readErr(ctx, "reading history", err)
		}
		e.At = fromUnixNano(at)
		events = append(events, e)
	}
	return events, readErr(ctx, "reading history", rows.Err())
}

// Prune deletes the history of messages no longer queued and last updated
// before before, pruneBatch records per transaction, then the wrapped keys
// no chunk refers to any more (those of batches whose messages all
// failed).
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		var n int
		err := s.submit(ctx, &request{run: func(b *batch) error {
			var err error
			n, err = b.pruneSome(unixNano(before), pruneBatch)
			return err
		}})
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	err := s.submit(ctx, &request{run: (*batch).sweepKeys})
	return total, err
}

// pruneSome deletes up to limit prunable records with their events.
func (b *batch) pruneSome(before int64, limit int) (int, error) {
	ids, err := b.prunable(before, limit)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, err
	}
	if err := b.execOp("pruning", `DELETE FROM events WHERE msg_id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
		return 0, err
	}
	if err := b.execOp("pruning", `DELETE FROM history WHERE id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
		return 0, err
	}
	return len(ids), nil
}

// prunableQuery lists up to ?2 records updated before ?1 whose message is
// not in the queue (by state and, should the two disagree, by the queue
// itself). It walks history_received (a test checks its plan): a record
// is received before it is updated (0004_history_without_updated_index.sql).
const prunableQuery = `SELECT id FROM history
	WHERE received < ?1 AND updated < ?1 AND state NOT IN ('queued', 'held')
	AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = history.id)
	LIMIT ?2`

// prunable lists the records prunableQuery finds.
func (b *batch) prunable(before int64, limit int) ([]string, error) {
	rows, err := b.query(prunableQuery, before, limit)
	if err != nil {
		return nil, mapErr("pruning", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, mapErr("pruning", err)
		}
		ids = append(ids, id)
	}
	return ids, mapErr("pruning", rows.Err())
}

// sweepKeys deletes the wrapped keys no chunk refers to, but for the
// batch's own: a request of the batch may have failed after storing it
// (outside its savepoint, see ensureKey) and later ones seal with it.
func (b *batch) sweepKeys() error {
	return b.execOp("pruning keys", `DELETE FROM data_keys
		WHERE id NOT IN (SELECT key_id FROM chunks WHERE key_id IS NOT NULL) AND id IS NOT ?`, b.bodyKey())
}
