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

// Search returns the records q selects, newest first. It walks the
// history_received index (received, id) backwards from Until or from the
// record Before names, and stops at the limit (0005_history_indexes.sql);
// an ID or a Message-ID is one seek of its own index. When ctx ends the
// search returns ctx's error at once, and pgx stops the statement on the
// server (a cancel request, then the connection is closed and the pool
// opens another).
func (s *Store) Search(ctx context.Context, q store.HistoryQuery) (recs []*store.Record, err error) {
	search := engine.NormalizeSearch(cleanQuery(q))
	err = s.withConn(ctx, "searching the history", func(ctx context.Context, c *pgxpool.Conn) error {
		query, args, err := searchQuery(ctx, c, search)
		if err != nil {
			return err
		}
		rows, err := c.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		recs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Record, error) { return scanRecord(row) })
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, s.readErr(ctx, "searching the history", err)
	}
	if recs == nil {
		recs = []*store.Record{}
	}
	return recs, nil
}

// cleanQuery makes q's text what PostgreSQL takes: the stored history is
// cleaned the same way (cleanRecord), so a value with a stray byte still
// finds its record.
func cleanQuery(q store.HistoryQuery) store.HistoryQuery {
	for _, f := range []*string{&q.From, &q.Rcpt, &q.HeaderID, &q.ID, &q.Subject, &q.State, &q.Account, &q.Before} {
		*f = cleanText(*f)
	}
	return q
}

// searchQuery is the statement of a search and its arguments. A page
// after the first starts after the record Before names, found first.
func searchQuery(ctx context.Context, c *pgxpool.Conn, q engine.Search) (string, []any, error) {
	var w where
	if q.Before != "" {
		var received time.Time
		err := c.QueryRow(ctx, `SELECT received FROM history WHERE id = $1`, q.Before).Scan(&received)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", nil, fmt.Errorf("%w: %s (the page to search before)", store.ErrNotFound, q.Before)
		}
		if err != nil {
			return "", nil, err
		}
		w.add("(received, id) < (?, ?)", received, q.Before)
	}
	searchConditions(&w, &q)
	w.args = append(w.args, q.Limit)
	return `SELECT ` + historyColumns + ` FROM history` + w.sql() + `
		ORDER BY received DESC, id DESC LIMIT $` + strconv.Itoa(len(w.args)), w.args, nil
}

// searchConditions adds the conditions of q's fields. Substrings are
// LIKE patterns with their wildcards escaped (engine.NormalizeSearch);
// recipients are matched one by one, so that a substring never spans two.
func searchConditions(w *where, q *engine.Search) {
	if q.ID != "" {
		w.add("id = ?", q.ID)
	}
	if len(q.HeaderIDs) > 0 {
		// history_header_id leaves out the records without a Message-ID:
		// the condition says so, for the planner to take the index.
		w.add("header_id = ANY (?) AND header_id <> ''", q.HeaderIDs)
	}
	if q.FromLike != "" {
		w.add(`history_fold(mail_from) LIKE history_fold(?) ESCAPE E'\\'`, q.FromLike)
	}
	if q.RcptLike != "" {
		w.add(`EXISTS (SELECT 1 FROM unnest(rcpts) AS r (addr)
			WHERE history_fold(r.addr) LIKE history_fold(?) ESCAPE E'\\')`, q.RcptLike)
	}
	if q.SubjectLike != "" {
		w.add(`history_fold(subject) LIKE history_fold(?) ESCAPE E'\\'`, q.SubjectLike)
	}
	if q.State != "" {
		w.add("state = ?", q.State)
	}
	if q.Account != "" {
		w.add("history_fold(account) = history_fold(?)", q.Account)
	}
	if !q.Since.IsZero() {
		w.add("received >= ?", q.Since)
	}
	if !q.Until.IsZero() {
		w.add("received < ?", q.Until)
	}
}

// where is a WHERE clause built condition by condition; each '?' of a
// condition becomes the next $n.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	var b strings.Builder
	n := len(w.args)
	for _, part := range strings.SplitAfter(cond, "?") {
		if p, ok := strings.CutSuffix(part, "?"); ok {
			n++
			part = p + "$" + strconv.Itoa(n)
		}
		b.WriteString(part)
	}
	w.conds = append(w.conds, b.String())
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
