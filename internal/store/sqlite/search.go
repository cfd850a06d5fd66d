package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	sqlite "modernc.org/sqlite"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// history_fold(text) is text in lower case, Unicode letters included:
// SQLite's own lower() and LIKE fold ASCII letters only, and a subject
// search for "über" must find "Über". PostgreSQL has a function of the
// same name (its 0003_history_search.sql), so both engines search alike.
func init() {
	sqlite.MustRegisterDeterministicScalarFunction("history_fold", 1, historyFold)
}

func historyFold(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	switch v := args[0].(type) {
	case string:
		return strings.ToLower(v), nil
	case []byte:
		return strings.ToLower(string(v)), nil
	}
	return args[0], nil // NULL and numbers have no case
}

// Search returns the records q selects, newest first. It walks the
// history_received index backwards from Until or from the record Before
// names, and stops at the limit (0002_history_search.sql); an ID or a
// Message-ID is one seek of its own index. When ctx ends the search stops
// at once with ctx's error (searchQuery says how).
func (s *Store) Search(ctx context.Context, q store.HistoryQuery) ([]*store.Record, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	query, args, err := s.searchQuery(ctx, engine.NormalizeSearch(q))
	if err != nil {
		return nil, err
	}
	recs, err := readRows(ctx, s.rdb, "searching the history", query, args, scanRecord)
	if recs == nil && err == nil {
		recs = []*store.Record{} // a JSON list, even when empty
	}
	return recs, err
}

// readRows runs a query on db and scans each row; nil when there is none.
func readRows[T any](ctx context.Context, db *sql.DB, op, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, readErr(ctx, op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, readErr(ctx, op, err)
		}
		out = append(out, v)
	}
	return out, readErr(ctx, op, rows.Err())
}

// searchQuery is the statement of a search and its arguments. A page
// after the first starts after the record Before names, found first.
//
// The page is a MATERIALIZED common table expression so that all of the
// search's reading happens in the statement's first step: the driver
// (modernc.org/sqlite) interrupts a statement whose context ends only
// during that step, and a search that finds its first match at once and
// then reads the rest of the history for the next would otherwise run to
// its end past the caller's deadline. The outer query reads the page in
// the order it was written (the plan sorts nothing again).
func (s *Store) searchQuery(ctx context.Context, q engine.Search) (string, []any, error) {
	var w where
	if q.Before != "" {
		var received int64
		err := s.rdb.QueryRowContext(ctx, `SELECT received FROM history WHERE id = ?`, q.Before).Scan(&received)
		if errors.Is(err, sql.ErrNoRows) {
			return "", nil, fmt.Errorf("%w: %s (the page to search before)", store.ErrNotFound, q.Before)
		}
		if err != nil {
			return "", nil, readErr(ctx, "searching the history", err)
		}
		w.add("(received, id) < (?, ?)", received, q.Before)
	}
	searchConditions(&w, &q)
	return `WITH page AS MATERIALIZED (SELECT ` + historyColumns + ` FROM history` + w.sql() + `
		ORDER BY received DESC, id DESC LIMIT ?)
		SELECT ` + historyColumns + ` FROM page ORDER BY received DESC, id DESC`, append(w.args, q.Limit), nil
}

// searchConditions adds the conditions of q's fields. Substrings are
// LIKE patterns with their wildcards escaped (engine.NormalizeSearch);
// recipients are matched one by one, so that a substring never spans two.
func searchConditions(w *where, q *engine.Search) {
	if q.ID != "" {
		w.add("id = ?", q.ID)
	}
	if len(q.HeaderIDs) > 0 {
		w.add("header_id IN (?"+strings.Repeat(", ?", len(q.HeaderIDs)-1)+")", anys(q.HeaderIDs)...)
	}
	if q.FromLike != "" {
		w.add(`history_fold(mail_from) LIKE history_fold(?) ESCAPE '\'`, q.FromLike)
	}
	if q.RcptLike != "" {
		w.add(`EXISTS (SELECT 1 FROM json_each(history.rcpts)
			WHERE history_fold(json_each.value) LIKE history_fold(?) ESCAPE '\')`, q.RcptLike)
	}
	if q.SubjectLike != "" {
		w.add(`history_fold(subject) LIKE history_fold(?) ESCAPE '\'`, q.SubjectLike)
	}
	if q.State != "" {
		w.add("state = ?", q.State)
	}
	if q.Account != "" {
		w.add("history_fold(account) = history_fold(?)", q.Account)
	}
	if !q.Since.IsZero() {
		w.add("received >= ?", unixNano(q.Since))
	}
	if !q.Until.IsZero() {
		w.add("received < ?", unixNano(q.Until))
	}
}

// where is a WHERE clause built condition by condition.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

func anys(list []string) []any {
	out := make([]any, len(list))
	for i, v := range list {
		out[i] = v
	}
	return out
}
