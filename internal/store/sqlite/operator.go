package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Get returns a queued (or held) message's envelope.
func (s *Store) Get(ctx context.Context, id string) (*store.Envelope, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	e, err := scanEnvelope(s.rdb.QueryRowContext(ctx, `SELECT `+envelopeColumns+` FROM messages WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	if err != nil {
		return nil, readErr(ctx, "reading the queue", err)
	}
	return e, nil
}

// List returns the queued messages f selects in ID order (arrival order).
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Envelope, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	query, args, err := listQuery(f)
	if err != nil {
		return nil, err
	}
	return readRows(ctx, s.rdb, "listing the queue", query, args, func(sc scanner) (*store.Envelope, error) { return scanEnvelope(sc) })
}

func listQuery(f store.Filter) (string, []any, error) {
	// The filters are written +column so that SQLite walks the primary
	// key from the cursor and stops when the page is full, instead of
	// reading every message of the state from messages_due and sorting
	// them again for each page: a whole listing then reads the queue
	// once, never pages × matching messages (TestListPagesWalkThePrimaryKey).
	var w where
	switch f.State {
	case "":
	case store.StateQueued, store.StateHeld:
		w.add("+state = ?", f.State)
	default:
		return "", nil, fmt.Errorf("store: list: state %q is not queued or held", f.State)
	}
	if f.Account != "" {
		w.add("+account = ?", f.Account)
	}
	if f.After != "" {
		w.add("id > ?", f.After)
	}
	query := `SELECT ` + envelopeColumns + ` FROM messages` + w.sql() + ` ORDER BY id`
	if f.Limit > 0 {
		query, w.args = query+` LIMIT ?`, append(w.args, f.Limit)
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

func (s *Store) setState(ctx context.Context, id, from, to, event string) error {
	if err := s.readable(); err != nil {
		return err
	}
	now := time.Now()
	return s.submit(ctx, &request{run: func(b *batch) error {
		changed, err := b.changeOne(id, `UPDATE messages SET state = ? WHERE id = ? AND state = ?`, to, id, from)
		if err != nil || !changed {
			return err
		}
		if err := b.setHistoryState(id, to, now); err != nil {
			return err
		}
		return b.insertEvent(&store.Event{ID: id, At: now, Type: event})
	}})
}

// changeOne runs an UPDATE of one message; no change is ErrNotFound when
// the message is not in the queue, else (already so) no error.
func (b *batch) changeOne(id, query string, args ...any) (bool, error) {
	res, err := b.execResult(query, args...)
	if err != nil {
		return false, mapErr("updating the queue", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	exists, err := b.exists(id)
	if err == nil && !exists {
		err = fmt.Errorf("%w: %s", store.ErrNotFound, id)
	}
	return false, err
}

// Retry makes a message due at now. A held message stays held: an
// operator's hold is lifted by Release only. A Retry while an attempt
// runs keeps the message due after that attempt's Finish.
func (s *Store) Retry(ctx context.Context, id string, now time.Time) error {
	if err := s.readable(); err != nil {
		return err
	}
	return s.submit(ctx, &request{run: func(b *batch) error {
		if _, err := b.changeOne(id, `UPDATE messages SET next_attempt = ?1,
			retried = CASE WHEN lease_owner <> '' THEN ?1 ELSE 0 END WHERE id = ?2`, unixNano(now), id); err != nil {
			return err
		}
		if err := b.execOp("writing history", `UPDATE history SET updated = ? WHERE id = ?`, unixNano(now), id); err != nil {
			return err
		}
		return b.insertEvent(&store.Event{ID: id, At: now, Type: store.EventRetry})
	}})
}

// Delete removes a message and its body from the queue; its history
// stays, in state deleted. A worker holding its lease gets ErrLeaseLost.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.readable(); err != nil {
		return err
	}
	now := time.Now()
	return s.submit(ctx, &request{run: func(b *batch) error {
		var bodyKey sql.NullInt64
		err := b.queryRow(`SELECT body_key FROM messages WHERE id = ?`, id).Scan(&bodyKey)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", store.ErrNotFound, id)
		}
		if err != nil {
			return mapErr("reading the queue", err)
		}
		if err := b.removeMessage(id, bodyKey); err != nil {
			return err
		}
		if err := b.setHistoryState(id, store.StateDeleted, now); err != nil {
			return err
		}
		return b.insertEvent(&store.Event{ID: id, At: now, Type: store.EventDeleted})
	}})
}

// statsQuery counts the queue by state and account, with the oldest
// message of each; it reads messages_due alone (a test checks its plan).
const statsQuery = `SELECT state, account, COUNT(*), MIN(received) FROM messages GROUP BY state, account`

// Stats counts the queue by state and account and finds its oldest queued
// message.
func (s *Store) Stats(ctx context.Context) (*store.Stats, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	st := &store.Stats{Depth: map[store.DepthKey]int{}}
	rows, err := s.rdb.QueryContext(ctx, statsQuery)
	if err != nil {
		return nil, readErr(ctx, "queue stats", err)
	}
	defer rows.Close()
	var oldest sql.NullInt64
	for rows.Next() {
		var k store.DepthKey
		var n int
		var received int64
		if err := rows.Scan(&k.State, &k.Account, &n, &received); err != nil {
			return nil, readErr(ctx, "queue stats", err)
		}
		st.Depth[k] = n
		if k.State == store.StateQueued && (!oldest.Valid || received < oldest.Int64) {
			oldest = sql.NullInt64{Int64: received, Valid: true}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, readErr(ctx, "queue stats", err)
	}
	st.Oldest = fromUnixNano(oldest.Int64)
	return st, nil
}

// Ping commits a write (the heartbeat row): it proves the writer runs and
// the database takes writes.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.readable(); err != nil {
		return err
	}
	return s.submit(ctx, &request{run: func(b *batch) error {
		return b.execOp("ping", `INSERT INTO heartbeat (id, at) VALUES (1, ?)
			ON CONFLICT (id) DO UPDATE SET at = excluded.at`, time.Now().UnixNano())
	}})
}
