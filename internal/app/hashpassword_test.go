package app

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// hashFromPipe runs hash-password with stdin a real pipe (not a terminal)
// holding input, as a script would.
func hashFromPipe(t *testing.T, input string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() {
		w.WriteString(input)
		w.Close()
	}()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), append([]string{"hash-password"}, args...), IO{Stdin: r, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func TestHashPasswordFromPipe(t *testing.T) {
	const pw = "pipe-secret pass"
	for _, tc := range []struct{ name, input string }{
		{"one line", pw + "\n"},
		{"CRLF line", pw + "\r\n"},
		{"no final newline", pw},
		{"only the first line is the password", pw + "\nsecond line\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Cost 4 keeps the test fast; its warning is checked elsewhere.
			code, stdout, stderr := hashFromPipe(t, tc.input, "-cost", "4")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if err := passwd.Verify(strings.TrimSpace(stdout), pw); err != nil {
				t.Errorf("printed hash does not verify: %v", err)
			}
			if strings.Contains(stderr, "Password") {
				t.Errorf("prompted for a piped password: %q", stderr)
			}
			testutil.AssertNoSecrets(t, "output", stdout+stderr, []string{pw})
		})
	}
}

func TestHashPasswordChecksSettings(t *testing.T) {
	const pw = "settings-secret"
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		stderr   string // must appear on stderr
	}{
		{"weak bcrypt cost warns", []string{"-cost", "4"}, 0, "warning: bcrypt cost 4 is weak; use 10 or more (default 12)"},
		{"cost below bcrypt's minimum is refused", []string{"-cost", "3"}, 1, "bcrypt cost 3 is outside bcrypt's range 4-31"},
		{"cost 0 is refused", []string{"-cost", "0"}, 1, "bcrypt cost 0 is outside bcrypt's range 4-31"},
		{"cost above bcrypt's maximum is refused", []string{"-cost", "32"}, 1, "bcrypt cost 32 is outside bcrypt's range 4-31"},
		{"cost with argon2id is ignored", []string{"-algorithm", "argon2id", "-cost", "4"}, 0, "warning: -cost applies to bcrypt only"},
		{"unknown algorithm", []string{"-algorithm", "md5"}, 1, `unknown algorithm "md5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := hashFromPipe(t, pw+"\n", tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d: %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.stderr)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("want exactly one line on stderr, got %q", stderr)
			}
			if code == 0 {
				if err := passwd.Verify(strings.TrimSpace(stdout), pw); err != nil {
					t.Errorf("printed hash does not verify: %v", err)
				}
			} else if stdout != "" {
				t.Errorf("a refused run printed %q", stdout)
			}
			testutil.AssertNoSecrets(t, "output", stdout+stderr, []string{pw})
		})
	}
	// No weak-cost warning at the recommended minimum.
	if _, _, stderr := hashFromPipe(t, pw+"\n", "-cost", "10"); stderr != "" {
		t.Errorf("cost 10: unexpected stderr %q", stderr)
	}
}

func TestHashPasswordRefusesEmptyPassword(t *testing.T) {
	for _, input := range []string{"", "\n"} {
		code, stdout, stderr := hashFromPipe(t, input, "-cost", "4")
		if code != 1 || stdout != "" || !strings.Contains(stderr, "empty password") {
			t.Errorf("input %q: exit %d, stdout %q, stderr %q", input, code, stdout, stderr)
		}
	}
}
