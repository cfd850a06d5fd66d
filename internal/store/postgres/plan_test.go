package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
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
