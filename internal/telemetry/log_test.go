package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

type stringer struct{ s string }

func (s stringer) String() string { return "stringer(" + s.s + ")" }

type nested struct {
	Name  string
	Inner map[string][]string
}

// TestLoggingRedactsBeforeFormatting logs secrets holding the characters
// the JSON and text formatters escape or split (& < > " \ and a newline),
// in every kind of argument: no part of any secret may reach the output.
func TestLoggingRedactsBeforeFormatting(t *testing.T) {
	specials := map[string]string{"amp": "&", "lt": "<", "gt": ">", "quote": `"`, "backslash": `\`, "newline": "\n"}
	for _, format := range []string{"text", "json"} {
		for name, special := range specials {
			t.Run(format+"/"+name, func(t *testing.T) {
				// Both halves are unique, so a secret split or escaped by
				// the formatter is still found.
				head, tail := "HEADx"+name+"x9f3", "TAILx"+name+"x7c1"
				secret := head + special + tail
				var out bytes.Buffer
				l := NewLogging(&out, "trace", format)
				l.Redactor().Set("k", secret)
				log := l.Logger().Named("component")

				log.Info("message with " + secret)
				log.Info("string", "value", secret)
				log.Info("error", "error", fmt.Errorf("wrapped: %w", errors.New("cause "+secret)))
				log.Info("stringer", "value", stringer{secret})
				log.Info("bytes", "value", []byte(secret))
				log.Info("nested", "value", nested{Name: secret, Inner: map[string][]string{"k": {secret}}})
				log.Info("map", "value", map[string]string{"k": secret})
				log.Info("format", "value", hclog.Fmt("%s!", secret))
				log.Info("quote", "value", hclog.Quote(secret))
				log.With("implied", secret).Info("with")
				log.Info("key", secret, "v")

				text := out.String()
				for _, part := range []string{head, tail} {
					if n := strings.Count(text, part); n > 0 {
						t.Errorf("a part of the secret reached the %s output %d times", format, n)
					}
				}
				if got := strings.Count(text, "[REDACTED]"); got < 12 {
					t.Errorf("%d redactions, want at least 12 (one per logged secret)", got)
				}
			})
		}
	}
}

// TestLoggingKeepsOrdinaryValues checks that redaction before formatting
// leaves values without secrets as the formatter would print them.
func TestLoggingKeepsOrdinaryValues(t *testing.T) {
	var out bytes.Buffer
	l := NewLogging(&out, "info", "json")
	l.Redactor().Set("k", "some-secret-value")
	l.Logger().Info("plain", "n", 42, "ok", true, "s", "hello & <you>", "err", errors.New("boom"))
	want := []string{`"n":42`, `"ok":true`, `"s":"hello \u0026 \u003cyou\u003e"`, `"err":"boom"`}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %s:\n%s", w, out.String())
		}
	}
}

// A line below the configured level costs nothing: it is dropped before
// it is redacted (hclog hands every level to the sinks), and it is not
// written. After Configure lowers the level, the same line is written,
// redacted.
func TestLoggingDropsLinesBelowTheLevelBeforeRedacting(t *testing.T) {
	var out bytes.Buffer
	l := NewLogging(&out, "info", "text")
	l.Redactor().Set("k", "hunter2-secret")
	log := l.Logger().Named("queue")
	args := []interface{}{"id", "0123456789", "account", "user@example.com", "reply", "250 2.0.0 OK hunter2-secret"}
	if n := testing.AllocsPerRun(100, func() { l.sink.Accept("queue", hclog.Debug, "message queued", args...) }); n != 0 {
		t.Fatalf("the sink allocates %.0f times for a Debug line at level info; want it dropped before redaction", n)
	}
	log.Debug("message queued", args...)
	if out.Len() != 0 {
		t.Fatalf("a Debug line at level info was written: %q", out.String())
	}
	l.Configure("debug", "text")
	log.Debug("message queued", args...)
	got := out.String()
	if !strings.Contains(got, "message queued") || strings.Contains(got, "hunter2-secret") {
		t.Fatalf("at level debug: %q; want the line, redacted", got)
	}
}
