package bounce

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.eml from the current output")

// TestGolden keeps complete notifications in testdata for review: dsn.eml
// (a provider's 550, an expiry after temporary refusals with ORCPT, an
// expiry without any attempt; ENVID) and dsn-utf8.eml (a sender,
// recipient, reply and subject in UTF-8). Regenerate them with
// go test ./internal/bounce -run TestGolden -update, and read the diff.
func TestGolden(t *testing.T) {
	expired := "message expired after 5d in the queue"
	tests := []struct {
		file     string
		orig     func(*testing.T) Original
		failures []Failure
	}{
		{
			file: "dsn.eml",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.EnvID = "app1-20260309-0042"
				return o
			},
			failures: []Failure{
				{Rcpt: "bob@example.org", Reply: gmailNoSuchUser, LastAttempt: arrival.Add(2e9)},
				{Rcpt: "carol@example.org", ORcpt: "rfc822;Carol.Jones@example.org", Status: "4.4.7",
					Reply:  "451 4.7.0 Temporary server error. Please try again later. [PR0P264CA0001]",
					Reason: expired, LastAttempt: tried},
				{Rcpt: "dave@example.net", Status: "4.4.7", Reason: expired},
			},
		},
		{
			file: "dsn-utf8.eml",
			orig: func(t *testing.T) Original {
				o := original(t)
				o.From = "jörg@bücher.de"
				o.Header = readHeader(t, "From: =?utf-8?q?J=C3=B6rg?= <jörg@bücher.de>\r\n"+
					"Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_Q1?=\r\nMessage-ID: <q1@bücher.de>\r\n\r\n"+bodySecret)
				return o
			},
			failures: []Failure{
				{Rcpt: "zoë@exämple.org", ORcpt: "utf-8;zoë@exämple.org",
					Reply: "550 5.1.1 Empfänger unbekannt", LastAttempt: tried},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := Build(tc.orig(t), tc.failures, options())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parseDSN(got); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the notification differs from %s (run with -update and review the diff):\n%s", path, got)
			}
		})
	}
}
