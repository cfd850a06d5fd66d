package rcptfit

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFitHeader(t *testing.T) {
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	tests := []struct {
		name   string
		header string
		rcpts  []string
		want   string
		adj    Adjustment
	}{
		{
			name:   "envelope equals To and Cc: unchanged",
			header: crlf("From: a@x.test\nTo: B <b@y.test>,\n  c@y.test\nCc: d@y.test\nSubject: hi\n\n"),
			rcpts:  []string{"b@y.test", "C@Y.test", "d@y.test"},
			want:   crlf("From: a@x.test\nTo: B <b@y.test>,\n  c@y.test\nCc: d@y.test\nSubject: hi\n\n"),
		},
		{
			name:   "blind recipient added as Bcc, client Bcc removed",
			header: crlf("To: b@y.test\nBcc: old@z.test,\n e@z.test\nSubject: hi\n\n"),
			rcpts:  []string{"b@y.test", "e@z.test", "f@z.test"},
			want:   crlf("To: b@y.test\nSubject: hi\nBcc: <e@z.test>,\n <f@z.test>\n\n"),
			adj:    Adjustment{Blind: 2, Bccs: 1},
		},
		{
			name:   "Bcc split: To names others, only the blind copy goes out",
			header: crlf("To: b@y.test\nCc: c@y.test\nSubject: hi\n\n"),
			rcpts:  []string{"e@z.test"},
			want:   crlf("Subject: hi\nBcc: <e@z.test>\n\n"),
			adj:    Adjustment{Blind: 1, Dropped: 2},
		},
		{
			name:   "partial retry: To keeps the envelope's recipients",
			header: crlf("To: \"B\" <b@y.test>, c@y.test\nSubject: hi\n\n"),
			rcpts:  []string{"c@y.test"},
			want:   crlf("To: <c@y.test>\nSubject: hi\n\n"),
			adj:    Adjustment{Dropped: 1},
		},
		{
			name:   "repeated To fields are merged",
			header: crlf("To: b@y.test\nSubject: hi\nTo: c@y.test\n\n"),
			rcpts:  []string{"b@y.test", "c@y.test"},
			want:   crlf("To: <b@y.test>,\n <c@y.test>\nSubject: hi\n\n"),
		},
		{
			name:   "duplicate envelope recipient gets one Bcc entry",
			header: crlf("Subject: hi\n\n"),
			rcpts:  []string{"e@z.test", "E@z.test"},
			want:   crlf("Subject: hi\nBcc: <e@z.test>\n\n"),
			adj:    Adjustment{Blind: 1},
		},
		{
			name:   "quoted local part",
			header: crlf("Subject: hi\n\n"),
			rcpts:  []string{`"a b"@z.test`},
			want:   crlf("Subject: hi\nBcc: <\"a b\"@z.test>\n\n"),
			adj:    Adjustment{Blind: 1},
		},
		{
			name:   "bare LF header, no empty line",
			header: "To: b@y.test\nSubject: hi\n",
			rcpts:  []string{"b@y.test", "e@z.test"},
			want:   "To: b@y.test\nSubject: hi\nBcc: <e@z.test>\n\n",
			adj:    Adjustment{Blind: 1},
		},
		{
			name:   "unparsable client Bcc is dropped",
			header: crlf("To: b@y.test\nBcc: not an address\n\n"),
			rcpts:  []string{"b@y.test"},
			want:   crlf("To: b@y.test\n\n"),
			adj:    Adjustment{Bccs: 1},
		},
		{
			name:   "empty group To",
			header: crlf("To: undisclosed-recipients:;\nSubject: hi\n\n"),
			rcpts:  []string{"e@z.test"},
			want:   crlf("To: undisclosed-recipients:;\nSubject: hi\nBcc: <e@z.test>\n\n"),
			adj:    Adjustment{Blind: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, adj, err := Header([]byte(tt.header), tt.rcpts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if adj != tt.adj {
				t.Errorf("Adjustment = %+v, want %+v", adj, tt.adj)
			}
		})
	}
}

func TestFitHeaderRefusesUnparsableRecipients(t *testing.T) {
	for _, h := range []string{
		"To: b@y.test, <broken\r\n\r\n",
		"Cc: @@@\r\n\r\n",
	} {
		if _, _, err := Header([]byte(h), []string{"b@y.test"}); err != ErrRecipientFields {
			t.Errorf("%q: err = %v, want ErrRecipientFields", h, err)
		}
	}
}
