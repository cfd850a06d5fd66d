package engine

import (
	"encoding/json"
	"fmt"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// rcptJSON is a recipient in its stored form, a JSON object with names of
// its own: the stored form must not change when a Go field is renamed.
type rcptJSON struct {
	Addr      string `json:"addr"`
	State     string `json:"state"`
	LastReply string `json:"last_reply,omitempty"`
	Notify    string `json:"notify,omitempty"`
	ORcpt     string `json:"orcpt,omitempty"`
}

// EncodeRcpts is the stored form of a message's recipients: a JSON array,
// read and written with the message, so that a delivery result is one
// update of one row.
func EncodeRcpts(rcpts []store.Recipient) (string, error) {
	rows := make([]rcptJSON, len(rcpts))
	for i, r := range rcpts {
		rows[i] = rcptJSON(r)
	}
	b, err := json.Marshal(rows)
	return string(b), err
}

// DecodeRcpts reverses EncodeRcpts.
func DecodeRcpts(text string) ([]store.Recipient, error) {
	var rows []rcptJSON
	if err := json.Unmarshal([]byte(text), &rows); err != nil {
		return nil, fmt.Errorf("store: stored recipients: %w", err)
	}
	rcpts := make([]store.Recipient, len(rows))
	for i, r := range rows {
		rcpts[i] = store.Recipient(r)
	}
	return rcpts, nil
}

// PendingCount counts the recipients still pending.
func PendingCount(rcpts []store.Recipient) int {
	n := 0
	for _, r := range rcpts {
		if r.State == store.RcptPending {
			n++
		}
	}
	return n
}
