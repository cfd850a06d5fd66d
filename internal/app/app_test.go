package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, IO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func TestValidate(t *testing.T) {
	code, out, _ := run(t, "", "validate", "-config", "../config/testdata/good/split")
	if code != 0 || !strings.Contains(out, "valid (1 listener(s), 1 provider(s), 1 group(s), 1 account(s), 1 client(s))") {
		t.Errorf("good config: exit %d, %q", code, out)
	}
	code, _, errOut := run(t, "", "validate", "-config", "../config/testdata/bad/many_errors.hcl")
	if code != 1 {
		t.Errorf("bad config: exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 4 {
		t.Fatalf("want all 4 diagnostics, got:\n%s", errOut)
	}
	for _, l := range lines {
		if !regexp.MustCompile(`^\.\./config/testdata/bad/many_errors\.hcl:\d+:\d+: `).MatchString(l) {
			t.Errorf("not file:line:col: %q", l)
		}
	}
	if code, _, _ := run(t, "", "validate"); code != 1 {
		t.Errorf("missing -config: exit %d", code)
	}
}

func TestHashPassword(t *testing.T) {
	for _, alg := range []string{"bcrypt", "argon2id"} {
		code, out, errOut := run(t, "s3cret pass\n", "hash-password", "-algorithm", alg, "-cost", "4")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", alg, code, errOut)
		}
		hash := strings.TrimSpace(out)
		if err := passwd.Verify(hash, "s3cret pass"); err != nil {
			t.Errorf("%s: printed hash does not verify: %v", alg, err)
		}
	}
	if code, _, _ := run(t, "", "hash-password"); code != 1 {
		t.Errorf("empty password: exit %d, want 1", code)
	}
}

func TestVersionAndUsage(t *testing.T) {
	if code, out, _ := run(t, "", "version"); code != 0 || out != "oauthrelay dev\n" {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, _ := run(t, ""); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
	if code, _, errOut := run(t, "", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
}

// TestDevMode runs `oauthrelay dev` and sends a message the way its banner
// tells a newcomer to.
func TestDevMode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &testutil.LogBuffer{}, &testutil.LogBuffer{}
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"dev", "-listen", "127.0.0.1:0", "-telemetry", "127.0.0.1:0"}, IO{Stdout: stdout, Stderr: stderr})
	}()
	banner := regexp.MustCompile(`SMTP +(\S+) [\s\S]*password +(\S+)[\s\S]*messages +(\S+)`)
	var m []string
	deadline := time.Now().Add(20 * time.Second)
	for m == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no banner; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
		m = banner.FindStringSubmatch(stdout.String())
		time.Sleep(20 * time.Millisecond) // polling the banner written by another goroutine
	}
	addr, password, messagesURL := m[1], m[2], m[3]
	text, err := testutil.Send(addr, testutil.Mail{User: "dev", Password: password, From: "dev@oauthrelay.test", To: []string{"you@example.com"}, Body: "Subject: hello from the test\r\n\r\nIt works.\r\n"})
	if err != nil {
		t.Fatalf("send: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(text, "accepted by the provider") {
		t.Errorf("reply %q", text)
	}
	resp, err := http.Get(messagesURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var msgs []struct {
		Subject string `json:"subject"`
		User    string `json:"authenticated_as"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&msgs); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Subject != "hello from the test" || msgs[0].User != "dev@oauthrelay.test" {
		t.Errorf("/dev/messages = %+v", msgs)
	}
	if !strings.Contains(stderr.String(), "message relayed") {
		t.Errorf("no log line for the message:\n%s", stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("dev exited %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dev did not stop")
	}
}
