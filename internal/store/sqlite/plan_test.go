package sqlite

import (
	"strings"
	"testing"
)

// Claim's queries seek the messages_due index: none scans the queue, so
// an account left out of claims (at its connection cap) with a long
// backlog costs each claim one seek, not a step per message.
func TestClaimQueriesSeekTheIndex(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{})
	db := rawDB(t, dir)
	for name, query := range map[string]string{"queued accounts": queuedAccountsQuery, "due of an account": dueOfQuery} {
		rows, err := db.Query("EXPLAIN QUERY PLAN "+query, "a@example.com", 0, 10)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
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
