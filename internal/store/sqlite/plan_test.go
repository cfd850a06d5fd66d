package sqlite

import (
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/engine"
)

// Claim's queries seek the messages_due index: none scans the queue, so
// an account left out of claims (at its connection cap) with a long
// backlog costs each claim one seek, not a step per message.
func TestClaimQueriesSeekTheIndex(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	db := rawDB(t, dir)
	for name, query := range map[string]string{"queued accounts": queuedAccountsQuery, "due of an account": dueOfQuery} {
		plan := explain(t, db, query, "a@example.com", 0, 10)
		text := strings.Join(plan, "\n")
		t.Logf("%s:\n%s", name, text)
		if !strings.Contains(text, "INDEX messages_due") {
			t.Errorf("%s does not use messages_due:\n%s", name, text)
		}
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN messages") {
				t.Errorf("%s scans the queue:\n%s", name, text)
			}
		}
	}
}

// Removing a sealed message looks for other chunks under its key with
// one seek of chunks_key, not a scan of every body.
func TestDropKeySeeksTheIndex(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	plan := explain(t, rawDB(t, dir), dropKeyQuery, 1)
	text := strings.Join(plan, "\n")
	t.Logf("plan:\n%s", text)
	if !strings.Contains(text, "INDEX chunks_key") || strings.Contains(text, "SCAN chunks") {
		t.Errorf("dropping a key does not seek chunks_key:\n%s", text)
	}
}

// Stats reads messages_due alone, not the queue's rows.
func TestStatsPlan(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	plan := explain(t, rawDB(t, dir), statsQuery)
	text := strings.Join(plan, "\n")
	t.Logf("plan:\n%s", text)
	if !slices.Contains(plan, "SCAN messages USING COVERING INDEX messages_due") {
		t.Errorf("Stats does not read messages_due alone:\n%s", text)
	}
}

// Prune walks the history by time received, not all of it.
func TestPrunePlan(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	plan := explain(t, rawDB(t, dir), prunableQuery, 1, 500)
	text := strings.Join(plan, "\n")
	t.Logf("plan:\n%s", text)
	if !slices.Contains(plan, "SEARCH history USING INDEX history_received (received<?)") {
		t.Errorf("Prune does not walk history_received:\n%s", text)
	}
}

// Search reads a page's worth of the history, not all of it: the newest
// page, a time range and the pages after it walk history_received in
// the result order (no sort of every record); an ID and a Message-ID are
// one seek. Plans without ANALYZE statistics are the ones a relay's
// database gets.
func TestSearchPlans(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	now := time.Now()
	rec := &store.Record{ID: "0001", Mode: "direct", State: store.StateSent, HeaderID: "<a@b>", Received: now, Updated: now}
	if err := s.Record(t.Context(), []*store.Record{rec}, nil); err != nil {
		t.Fatal(err)
	}
	hour := now.Add(-time.Hour)
	cases := []struct {
		name string
		q    store.HistoryQuery
		want string // a step of the plan
		sort bool   // a sort of the few matches is fine
	}{
		{"newest", store.HistoryQuery{}, "SCAN history USING INDEX history_received", false},
		{"time range", store.HistoryQuery{Since: hour, Until: now}, "SEARCH history USING INDEX history_received (received>? AND received<?)", false},
		{"next page", store.HistoryQuery{Before: "0001"}, "SEARCH history USING INDEX history_received ((received,id)<(?,?))", false},
		{"next page in a time range", store.HistoryQuery{Before: "0001", Since: hour}, "SEARCH history USING INDEX history_received (received>? AND (received,id)<(?,?))", false},
		{"sender in a time range", store.HistoryQuery{From: "scan", Since: hour}, "SEARCH history USING INDEX history_received (received>?)", false},
		{"recipient", store.HistoryQuery{Rcpt: "@example.com"}, "SCAN history USING INDEX history_received", false},
		{"ID", store.HistoryQuery{ID: "0001"}, "SEARCH history USING PRIMARY KEY (id=?)", true},
		{"Message-ID", store.HistoryQuery{HeaderID: "a@b"}, "SEARCH history USING INDEX history_header_id (header_id=?)", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			query, args, err := s.searchQuery(t.Context(), engine.NormalizeSearch(tc.q))
			if err != nil {
				t.Fatal(err)
			}
			plan := explain(t, s.rdb, query, args...)
			text := strings.Join(plan, "\n")
			t.Logf("plan:\n%s", text)
			if !slices.Contains(plan, tc.want) {
				t.Errorf("plan lacks %q:\n%s", tc.want, text)
			}
			if !tc.sort && strings.Contains(text, "TEMP B-TREE") {
				t.Errorf("plan sorts the matches instead of reading them in order:\n%s", text)
			}
			if slices.Contains(plan, "SCAN history") {
				t.Errorf("plan scans the table:\n%s", text)
			}
		})
	}
}

// explain returns the steps of a statement's query plan.
func explain(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// A page of `queue list` reads the queue in its primary key's order from
// the last page's end, whatever the filter: a page of a million-message
// queue reads its own rows (and, with a filter, those skipped to reach
// them once over the whole listing), never every message of a state to
// sort them again for each page.
func TestListPagesWalkThePrimaryKey(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	db := rawDB(t, dir)
	for _, f := range []store.Filter{
		{Limit: 100, After: "x"},
		{State: store.StateHeld, Limit: 100, After: "x"},
		{State: store.StateQueued, Limit: 100},
		{Account: "a@example.com", Limit: 100, After: "x"},
		{State: store.StateQueued, Account: "a@example.com", Limit: 100, After: "x"},
	} {
		query, args, err := listQuery(f)
		if err != nil {
			t.Fatal(err)
		}
		plan := explain(t, db, query, args...)
		text := strings.Join(plan, "\n")
		t.Logf("%+v:\n%s", f, text)
		if strings.Contains(text, "TEMP B-TREE") || strings.Contains(text, "messages_due") {
			t.Errorf("a page filtered by %+v sorts or seeks an index instead of walking the primary key:\n%s", f, text)
		}
	}
}
