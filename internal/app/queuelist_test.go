package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// `queue list` reads a long queue page by page and prints every message
// once, in arrival order, as text and as one valid JSON array.
func TestQueueListPages(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const n = 2*listPage + 3
	var ids []string
	batch := make([]*store.NewMessage, 0, 100)
	now := time.Now()
	for i := range n {
		id := transport.NewID()
		ids = append(ids, id)
		batch = append(batch, &store.NewMessage{Envelope: store.Envelope{
			ID: id, Account: "a@example.com", From: "<s@example.com>", HeaderID: fmt.Sprintf("<m%d@example.com>", i),
			Rcpts:    []store.Recipient{{Addr: "<r@example.net>"}},
			Received: now, Expires: now.Add(time.Hour), NextAttempt: now.Add(time.Hour),
		}, Body: strings.NewReader("Subject: x\r\n\r\nx\r\n")})
		if len(batch) == cap(batch) || i == n-1 {
			if err := st.Enqueue(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}

	var text bytes.Buffer
	if err := queueList(ctx, st, store.Filter{}, false, &text); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(text.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && slices.Contains(ids, f[0]) {
			listed = append(listed, f[0])
		}
	}
	if !slices.Equal(listed, ids) {
		t.Errorf("text list has %d messages (first %v), want the %d queued in arrival order", len(listed), listed[:min(3, len(listed))], n)
	}
	if !strings.Contains(text.String(), fmt.Sprintf("in %d messages.", n)) {
		t.Errorf("text list total line wrong:\n%s", text.String()[max(0, text.Len()-200):])
	}

	var js bytes.Buffer
	if err := queueList(ctx, st, store.Filter{}, true, &js); err != nil {
		t.Fatal(err)
	}
	var entries []queueEntry
	if err := json.Unmarshal(js.Bytes(), &entries); err != nil {
		t.Fatalf("JSON list does not parse: %v", err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.ID)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("JSON list has %d messages, want the %d queued in arrival order", len(got), n)
	}
	if !strings.Contains(js.String(), `"message_id": "<m0@example.com>"`) {
		t.Error("JSON list escapes or lacks the Message-ID")
	}

	var empty bytes.Buffer
	if err := queueList(ctx, st, store.Filter{State: store.StateHeld}, true, &empty); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(empty.String()) != "[]" {
		t.Errorf("empty JSON list = %q, want []", empty.String())
	}
}

// The queue commands show each message's expiry under the configuration's
// max_lifetime, which the relay applies to every queued message, not the
// one stored when it arrived.
func TestQueueShowsTheConfiguredLifetime(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	arrived := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	id := transport.NewID()
	err = st.Enqueue(ctx, &store.NewMessage{Envelope: store.Envelope{
		ID: id, Account: "a@example.com", From: "<s@example.com>", Rcpts: []store.Recipient{{Addr: "<r@example.net>"}},
		Received: arrived, Expires: arrived.Add(5 * 24 * time.Hour), NextAttempt: arrived,
	}, Body: strings.NewReader("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	view := lifetimeView{st, 2 * time.Hour}
	want := arrived.Add(2 * time.Hour)
	got, err := view.Get(ctx, id)
	if err != nil || !got.Expires.Equal(want) {
		t.Errorf("Get: expires %v, %v; want arrival + 2h", got.Expires, err)
	}
	list, err := view.List(ctx, store.Filter{})
	if err != nil || len(list) != 1 || !list[0].Expires.Equal(want) {
		t.Errorf("List: %v, %v; want one message expiring at arrival + 2h", list, err)
	}
}
