package postgres

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Claim's query walks the messages_due index, account by account, rather
// than the queue: with a backlog of 5000 messages of an account left out,
// the plan must not scan the table.
func TestClaimUsesTheDueIndex(t *testing.T) {
	s := openTest(t, newTestDB(t).store(t), Options{})
	ctx := t.Context()
	var msgs []*store.NewMessage
	for i := range 5000 {
		m := testMsg(fmt.Sprintf("m%05d", i))
		m.Account = fmt.Sprintf("acct%d@example.com", i%3)
		msgs = append(msgs, m)
	}
	if err := s.Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE messages`); err != nil {
		t.Fatal(err)
	}
	// EXPLAIN plans the statement without running it.
	rows, err := s.pool.Query(ctx, `EXPLAIN `+claimSQL, time.Now(), 10, []string{"acct0@example.com"}, "w1", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan on messages") || !strings.Contains(text, "messages_due") {
		t.Errorf("Claim's plan does not walk messages_due:\n%s", text)
	}
}

// Search reads a page's worth of the history, not all of it: with 20000
// records analyzed, the newest page, a time range and the pages after it
// walk history_received (received, id) backwards in the result order (no
// sort, no scan of the table); an ID and a Message-ID are one seek.
func TestSearchPlans(t *testing.T) {
	s := openTest(t, newTestDB(t).store(t), Options{})
	ctx := t.Context()
	now := time.Now()
	var recs []*store.Record
	for i := range 20000 {
		at := now.Add(time.Duration(i-20000) * time.Second)
		recs = append(recs, &store.Record{ID: fmt.Sprintf("r%05d", i), Mode: "direct", State: store.StateSent,
			From: "<app@example.com>", Rcpts: []string{"<a@example.net>"}, HeaderID: fmt.Sprintf("<%d@app>", i),
			Received: at, Updated: at})
	}
	for chunk := range slices.Chunk(recs, 1000) {
		if err := s.Record(ctx, chunk, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE history`); err != nil {
		t.Fatal(err)
	}
	hour := now.Add(-time.Hour)
	cases := []struct {
		name string
		q    store.HistoryQuery
		want string // in the plan
		sort bool   // a sort of the few matches is fine
	}{
		{"newest", store.HistoryQuery{}, "Index Scan Backward using history_received", false},
		{"time range", store.HistoryQuery{Since: hour, Until: now}, "Index Cond: ((received >= ", false},
		{"next page", store.HistoryQuery{Before: "r19000"}, "Index Cond: (ROW(received, id) < ROW(", false},
		// Few matches expected: the planner may collect the range's and sort them.
		{"sender in a time range", store.HistoryQuery{From: "scan", Since: hour}, "Index Cond: (received >= ", true},
		{"recipient", store.HistoryQuery{Rcpt: "@example.net"}, "Index Scan Backward using history_received", false},
		{"ID", store.HistoryQuery{ID: "r00042"}, "history_pkey", true},
		{"Message-ID", store.HistoryQuery{HeaderID: "42@app"}, "history_header_id", true},
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			query, args, err := searchQuery(ctx, c, engine.NormalizeSearch(tc.q))
			if err != nil {
				t.Fatal(err)
			}
			text := explain(t, c, query, args...)
			t.Logf("plan:\n%s", text)
			if !strings.Contains(text, tc.want) {
				t.Errorf("plan lacks %q:\n%s", tc.want, text)
			}
			if strings.Contains(text, "Seq Scan on history") || !tc.sort && strings.Contains(text, "Sort") {
				t.Errorf("plan scans or sorts the history:\n%s", text)
			}
		})
	}
}

// explain returns a statement's query plan (EXPLAIN plans it without
// running it).
func explain(t *testing.T, c *pgxpool.Conn, query string, args ...any) string {
	t.Helper()
	rows, err := c.Query(t.Context(), "EXPLAIN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}
