package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Claim leases up to limit due messages to owner until now+lease, oldest
// next attempt first. It runs in the writer, so claims never overlap.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, limit int, lease time.Duration, skip []string) ([]*store.Claimed, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	if owner == "" || lease <= 0 {
		return nil, errors.New("store: claim needs an owner and a positive lease")
	}
	if limit <= 0 {
		return nil, nil
	}
	var claimed []*store.Claimed
	err := s.submit(ctx, &request{items: limit, run: func(b *batch) error {
		var err error
		claimed, err = b.claim(owner, now, now.Add(lease), limit, skip)
		return err
	}})
	if err != nil {
		return nil, err
	}
	return claimed, nil
}

func (b *batch) claim(owner string, now, until time.Time, limit int, skip []string) ([]*store.Claimed, error) {
	ids, err := b.dueIDs(now, limit, skip)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	list, _ := json.Marshal(ids) // []string always marshals
	// An owner taking its own expired lease back (its attempt may still
	// run) keeps an operator's Retry made during that attempt.
	rows, err := b.query(`UPDATE messages SET lease_owner = ?1, lease_until = ?2,
			retried = CASE WHEN lease_owner = ?1 THEN retried ELSE 0 END
		WHERE id IN (SELECT value FROM json_each(?3))
		RETURNING `+envelopeColumns,
		owner, unixNano(until), string(list))
	if err != nil {
		return nil, mapErr("claiming", err)
	}
	defer rows.Close()
	var claimed []*store.Claimed
	for rows.Next() {
		e, err := scanEnvelope(rows)
		if err != nil {
			return nil, mapErr("claiming", err)
		}
		claimed = append(claimed, &store.Claimed{Envelope: *e, Owner: owner, LeaseUntil: until})
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("claiming", err)
	}
	engine.SortClaimed(claimed)
	return claimed, nil
}

// due is a message Claim may take.
type due struct {
	id             string
	next, received int64
}

// dueIDs returns the IDs of up to limit due messages, oldest next attempt
// first, of the accounts not in skip. It goes account by account along
// the messages_due index: an account left out costs one seek however
// long its backlog, where a scan by time would step over each of its
// messages at every claim.
func (b *batch) dueIDs(now time.Time, limit int, skip []string) ([]string, error) {
	accounts, err := b.queuedAccounts()
	if err != nil {
		return nil, err
	}
	var cands []due
	for _, a := range accounts {
		if slices.Contains(skip, a) {
			continue
		}
		if cands, err = b.dueOf(cands, a, now, limit); err != nil {
			return nil, err
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		x, y := cands[i], cands[j]
		if x.next != y.next {
			return x.next < y.next
		}
		if x.received != y.received {
			return x.received < y.received
		}
		return x.id < y.id
	})
	ids := make([]string, 0, min(limit, len(cands)))
	for _, c := range cands[:min(limit, len(cands))] {
		ids = append(ids, c.id)
	}
	return ids, nil
}

// Claim's queries; each must seek the messages_due index (a test checks
// their query plans).
const (
	queuedAccountsQuery = `WITH RECURSIVE acct(name) AS (
			SELECT (SELECT MIN(account) FROM messages WHERE state = 'queued')
			UNION ALL
			SELECT (SELECT MIN(account) FROM messages WHERE state = 'queued' AND account > acct.name)
			FROM acct WHERE acct.name IS NOT NULL)
		SELECT name FROM acct WHERE name IS NOT NULL`
	dueOfQuery = `SELECT id, next_attempt, received FROM messages
		WHERE state = 'queued' AND account = ?1 AND next_attempt <= ?2 AND pending > 0 AND lease_until <= ?2
		ORDER BY next_attempt LIMIT ?3`
)

// queuedAccounts lists the accounts with queued messages, one seek each.
func (b *batch) queuedAccounts() ([]string, error) {
	rows, err := b.query(queuedAccountsQuery)
	if err != nil {
		return nil, mapErr("claiming", err)
	}
	defer rows.Close()
	var accounts []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, mapErr("claiming", err)
		}
		accounts = append(accounts, a)
	}
	return accounts, mapErr("claiming", rows.Err())
}

// dueOf appends up to limit due messages of account to cands.
func (b *batch) dueOf(cands []due, account string, now time.Time, limit int) ([]due, error) {
	rows, err := b.query(dueOfQuery, account, unixNano(now), limit)
	if err != nil {
		return nil, mapErr("claiming", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.next, &d.received); err != nil {
			return nil, mapErr("claiming", err)
		}
		cands = append(cands, d)
	}
	return cands, mapErr("claiming", rows.Err())
}

// Extend renews owner's lease on id until until. A lease that expired but
// was not taken over is still the owner's.
func (s *Store) Extend(ctx context.Context, id, owner string, until time.Time) error {
	if err := s.readable(); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("%w: %s: no owner", store.ErrLeaseLost, id)
	}
	return s.submit(ctx, &request{run: func(b *batch) error {
		res, err := b.execResult(`UPDATE messages SET lease_until = ? WHERE id = ? AND lease_owner = ?`,
			unixNano(until), id, owner)
		if err != nil {
			return mapErr("extending a lease", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return b.leaseLost(id)
		}
		return nil
	}})
}

// leaseLost is the error for a lease on id the caller does not hold; it
// also matches store.ErrNotFound when the message is gone altogether
// (delivered or deleted by an operator).
func (b *batch) leaseLost(id string) error {
	exists, err := b.exists(id)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: %w: %s", store.ErrLeaseLost, store.ErrNotFound, id)
	}
	return fmt.Errorf("%w: %s", store.ErrLeaseLost, id)
}

func (b *batch) exists(id string) (bool, error) {
	var one int
	err := b.queryRow(`SELECT 1 FROM messages WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, mapErr("reading the queue", err)
}

// ReleaseLeases drops every lease owner holds.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) error {
	if err := s.readable(); err != nil || owner == "" {
		return err
	}
	return s.submit(ctx, &request{run: func(b *batch) error {
		return b.execOp("releasing leases", `UPDATE messages SET lease_owner = '', lease_until = 0
			WHERE lease_owner = ?`, owner)
	}})
}

// Finish records an attempt and releases owner's lease on id. The
// message keeps its state (a message held during the attempt stays held)
// unless no recipient is pending any more: then it leaves the queue.
func (s *Store) Finish(ctx context.Context, id, owner string, res store.Result) error {
	if err := s.readable(); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("%w: %s: no owner", store.ErrLeaseLost, id)
	}
	if res.At.IsZero() {
		res.At = time.Now()
	}
	return s.submit(ctx, &request{run: func(b *batch) error {
		return b.finish(id, owner, &res)
	}})
}

func (b *batch) finish(id, owner string, res *store.Result) error {
	e, bodyKey, err := b.leased(id, owner)
	if err != nil {
		return err
	}
	events, err := engine.ApplyResult(e, res)
	if err != nil {
		return err
	}
	for _, ev := range events {
		if err := b.insertEvent(ev); err != nil {
			return err
		}
	}
	if engine.PendingCount(e.Rcpts) == 0 {
		return b.finalize(e, bodyKey, res.At)
	}
	return b.requeue(e, res)
}

// leased reads what Finish changes of id (recipients, attempts, last
// reply) if owner holds its lease, and its body_key.
func (b *batch) leased(id, owner string) (*store.Envelope, sql.NullInt64, error) {
	e := &store.Envelope{ID: id}
	var (
		rcpts    string
		attempts int64
		bodyKey  sql.NullInt64
	)
	err := b.queryRow(`SELECT rcpts, attempts, last_reply, body_key FROM messages
		WHERE id = ? AND lease_owner = ?`, id, owner).Scan(&rcpts, &attempts, &e.LastReply, &bodyKey)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, bodyKey, b.leaseLost(id)
	}
	if err != nil {
		return nil, bodyKey, mapErr("finishing", err)
	}
	if e.Rcpts, err = engine.DecodeRcpts(rcpts); err != nil {
		return nil, bodyKey, err
	}
	e.Attempts = int(attempts)
	return e, bodyKey, nil
}

// requeue stores the new recipient states of a message still pending and
// releases the lease.
func (b *batch) requeue(e *store.Envelope, res *store.Result) error {
	rcpts, err := engine.EncodeRcpts(e.Rcpts)
	if err != nil {
		return err
	}
	// An operator's Retry during the attempt keeps the message due.
	err = b.execOp("finishing", `UPDATE messages SET rcpts = ?, pending = ?, attempts = ?,
		last_reply = ?, next_attempt = CASE WHEN retried > 0 THEN MIN(?5, retried) ELSE ?5 END,
		retried = 0, lease_owner = '', lease_until = 0 WHERE id = ?6`,
		rcpts, engine.PendingCount(e.Rcpts), e.Attempts, e.LastReply, unixNano(res.NextAttempt), e.ID)
	if err != nil {
		return err
	}
	return b.execOp("writing history", `UPDATE history SET updated = ? WHERE id = ?`, unixNano(res.At), e.ID)
}

// finalize takes a message with nothing pending out of the queue:
// delivered when no recipient failed, else bounced.
func (b *batch) finalize(e *store.Envelope, bodyKey sql.NullInt64, at time.Time) error {
	if err := b.removeMessage(e.ID, bodyKey); err != nil {
		return err
	}
	return b.setHistoryState(e.ID, engine.FinalState(e.Rcpts), at)
}

// removeMessage deletes a message and its body (the chunks go with it by
// foreign key), then the wrapped key its body was sealed with unless a
// chunk still refers to it. bodyKey is the message's body_key: the key,
// 0 for a body in clear, NULL for a message queued before that column,
// whose chunks tell.
func (b *batch) removeMessage(id string, bodyKey sql.NullInt64) error {
	keys := []int64{bodyKey.Int64}
	if !bodyKey.Valid {
		var err error
		if keys, err = b.chunkKeys(id); err != nil {
			return err
		}
	}
	if err := b.execOp("removing a message", `DELETE FROM messages WHERE id = ?`, id); err != nil {
		return err
	}
	for _, k := range keys {
		if k == 0 {
			continue // stored in clear
		}
		if err := b.execOp("removing a message", dropKeyQuery, k); err != nil {
			return err
		}
	}
	return nil
}

// dropKeyQuery deletes a wrapped key no chunk refers to any more; it
// must seek the chunks_key index (a test checks its plan), not scan the
// bodies.
const dropKeyQuery = `DELETE FROM data_keys
	WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM chunks WHERE key_id = ?1)`

// chunkKeys lists the data keys of a message's chunks.
func (b *batch) chunkKeys(id string) ([]int64, error) {
	rows, err := b.query(`SELECT DISTINCT key_id FROM chunks WHERE msg_id = ? AND key_id IS NOT NULL`, id)
	if err != nil {
		return nil, mapErr("removing a message", err)
	}
	defer rows.Close()
	var keys []int64
	for rows.Next() {
		var k int64
		if err := rows.Scan(&k); err != nil {
			return nil, mapErr("removing a message", err)
		}
		keys = append(keys, k)
	}
	return keys, mapErr("removing a message", rows.Err())
}
