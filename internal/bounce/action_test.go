package bounce

import (
	"strings"
	"testing"
	"time"
)

// Delayed and relayed notifications (RFC 3464 §2.3.3): their subject,
// Action and Status, Will-Retry-Until for a delay, the notice's wording,
// and still only the original's header.
func TestBuildActions(t *testing.T) {
	until := now.Add(4 * 24 * time.Hour)
	tests := []struct {
		name     string
		failures []Failure
		subject  string
		fields   map[string]string
		text     string
	}{
		{
			name: "delayed",
			failures: []Failure{{Action: ActionDelayed, Rcpt: "bob@example.org", ORcpt: "rfc822;Bob@example.org",
				Reply: "451 4.7.0 Try again later", LastAttempt: tried, WillRetryUntil: until}},
			subject: "Delayed Mail (still being retried)",
			fields: map[string]string{"Action": "delayed", "Status": "4.7.0", "Original-Recipient": "rfc822; Bob@example.org",
				"Will-Retry-Until": until.Format(time.RFC1123Z), "Diagnostic-Code": "smtp; 451 4.7.0 Try again later"},
			text: "has not yet been delivered",
		},
		{
			name:     "delayed without a 4xx status",
			failures: []Failure{{Action: ActionDelayed, Rcpt: "bob@example.org", Status: "5.1.1"}},
			subject:  "Delayed Mail (still being retried)",
			fields:   map[string]string{"Action": "delayed", "Status": "4.0.0"},
			text:     "keeps trying",
		},
		{
			name:     "relayed",
			failures: []Failure{{Action: ActionRelayed, Rcpt: "carol@example.org", Reply: "250 2.0.0 OK", LastAttempt: tried}},
			subject:  "Successful Mail Delivery Report",
			fields:   map[string]string{"Action": "relayed", "Status": "2.0.0", "Final-Recipient": "rfc822; carol@example.org"},
			text:     "provider sends no such notifications",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := original(t)
			orig.EnvID = "env-1"
			d := build(t, orig, tc.failures, options())
			if got := d.header.Get("Subject"); got != tc.subject {
				t.Errorf("Subject %q, want %q", got, tc.subject)
			}
			if got := d.message.Get("Original-Envelope-Id"); got != "env-1" {
				t.Errorf("Original-Envelope-Id %q", got)
			}
			if len(d.rcpts) != 1 {
				t.Fatalf("%d recipient blocks", len(d.rcpts))
			}
			for k, v := range tc.fields {
				if got := d.rcpts[0].Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.failures[0].Action != ActionDelayed && d.rcpts[0].Get("Will-Retry-Until") != "" {
				t.Error("Will-Retry-Until outside a delayed notification")
			}
			if !strings.Contains(strings.Join(strings.Fields(d.text), " "), tc.text) {
				t.Errorf("notice lacks %q:\n%s", tc.text, d.text)
			}
			if d.headers == nil {
				t.Error("the original's header is not attached")
			}
		})
	}
}

func TestBuildRefusesMixedActions(t *testing.T) {
	_, err := Build(original(t), []Failure{{Rcpt: "a@example.org"}, {Action: ActionRelayed, Rcpt: "b@example.org"}}, options())
	if err == nil {
		t.Error("one notification reported two actions")
	}
	if _, err := Build(original(t), []Failure{{Action: "expanded", Rcpt: "a@example.org"}}, options()); err == nil {
		t.Error("an unknown action was accepted")
	}
}
