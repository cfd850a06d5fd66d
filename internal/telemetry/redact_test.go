package telemetry

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor(&out)
	r.Set("a", "ya29.a0AfH6SMBxyz-secret")
	r.Set("b", "short1") // shorter than the index prefix
	r.Set("c", "tiny")   // too short to be treated as a secret
	r.Set("d", "ya29.a0AfH6SMBxyz-secret-longer")
	tests := map[string]string{
		"token=ya29.a0AfH6SMBxyz-secret end\n":        "token=[REDACTED] end\n",
		"ya29.a0AfH6SMBxyz-secret-longer\n":           "[REDACTED]\n",
		"pw short1 and tiny\n":                        "pw [REDACTED] and tiny\n",
		"nothing here\n":                              "nothing here\n",
		"two: short1short1\n":                         "two: [REDACTED][REDACTED]\n",
		"prefix only ya29.a0AfH6SMB but not the rest": "prefix only ya29.a0AfH6SMB but not the rest",
	}
	for in, want := range tests {
		out.Reset()
		if n, err := r.Write([]byte(in)); err != nil || n != len(in) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if out.String() != want {
			t.Errorf("%q → %q, want %q", in, out.String(), want)
		}
	}
	// Replacing a key's value forgets the old one.
	r.Set("a", "ya29.replacement-value")
	out.Reset()
	r.Write([]byte("old ya29.a0AfH6SMBxyz-secret new ya29.replacement-value"))
	if got := out.String(); !strings.Contains(got, "old ya29.a0AfH6SMBxyz-secret") && !strings.Contains(got, "[REDACTED]-longer") || !strings.Contains(got, "new [REDACTED]") {
		t.Errorf("after replacement: %q", got)
	}
}

func TestLoggingReconfigure(t *testing.T) {
	var out bytes.Buffer
	l := NewLogging(&out, "info", "text")
	log := l.Logger().Named("component")
	log.Debug("hidden")
	log.Info("shown", "k", "v")
	l.Configure("debug", "json")
	log.Debug("now visible")
	text := out.String()
	if strings.Contains(text, "hidden") || !strings.Contains(text, "oauthrelay.component: shown: k=v") {
		t.Errorf("text phase:\n%s", text)
	}
	if !strings.Contains(text, `"@message":"now visible"`) {
		t.Errorf("json phase:\n%s", text)
	}
}
