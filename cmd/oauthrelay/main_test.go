package main_test

// These tests run the built binary, like an operator would: signals,
// exit codes and logs are the contract here.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oauthrelay-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "oauthrelay")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/oauthrelay/oauthrelay/internal/app.Version=test-1.2.3", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	testutil.StopSharedPostgres()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestVersionIsEmbedded(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "oauthrelay test-1.2.3" {
		t.Errorf("version: %q %v", out, err)
	}
}

func TestValidateExitCodes(t *testing.T) {
	cmd := exec.Command(binary, "validate", "-config", "../../internal/config/testdata/bad/many_errors.hcl")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want 1", err)
	}
	if !regexp.MustCompile(`many_errors\.hcl:2:14: Invalid address`).Match(out) {
		t.Errorf("output:\n%s", out)
	}
	if out, err := exec.Command(binary, "validate", "-config", "../../examples/m365-app-only/oauthrelay.hcl").CombinedOutput(); err != nil {
		t.Errorf("valid example: %v\n%s", err, out)
	}
}

// TestRunReloadAndShutdown runs the relay binary, sends mail continuously
// through 50 SIGHUP reloads that alternately add and remove a listener and
// an account, then stops it with SIGTERM.
func TestRunReloadAndShutdown(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	dir := t.TempDir()
	const clientSecret = "binary-client-secret-value"
	sb.Tokens.AddClient("relay", clientSecret)
	rtAlice := sb.Tokens.IssueRefreshToken("relay", "alice@example.com", config.GoogleScope)
	rtErin := sb.Tokens.IssueRefreshToken("relay", "erin@example.com", config.GoogleScope)
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	testutil.WriteFile(t, dir, "cs", clientSecret)
	testutil.WriteFile(t, dir, "rt-alice", rtAlice)
	testutil.WriteFile(t, dir, "rt-erin", rtErin)
	const password = "binary-test-password"
	hash := testutil.FastHash(t, password)
	addr, extraAddr, telemetryAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	base := fmt.Sprintf(`
server {
  log_format       = "json"
  shutdown_timeout = "10s"
}
telemetry { address = %q }
listener "main" {
  address  = %q
  tls_mode = "none"
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = "%s/ca.pem"
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "file://%s/cs"
  account "alice@example.com" { refresh_token = "file://%s/rt-alice" }
  client "app" { password_hash = %q }
}
`, telemetryAddr, addr, sb.Tokens.URL, sb.SMTP.Addr, dir, dir, dir, hash)
	extended := base + fmt.Sprintf(`
listener "extra" {
  address  = %q
  tls_mode = "none"
}
account_group "h" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "file://%s/cs"
  account "erin@example.com" { refresh_token = "file://%s/rt-erin" }
  client "erin-app" { password_hash = %q }
}
`, extraAddr, dir, dir, hash)
	cfgPath := testutil.WriteFile(t, dir, "relay.hcl", base)

	cmd, logs, exited := startRelay(t, cfgPath)
	testutil.WaitFor(t, 20*time.Second, "the relay to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	var mu sync.Mutex
	sent, failures := 0, []error{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := testutil.Send(addr, testutil.Mail{User: "app", Password: password, From: "alice@example.com", To: []string{"x@example.net"}})
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					sent++
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return sent }
	reloads := func() int { return strings.Count(logs.String(), `"@message":"configuration reloaded"`) }

	for i := 0; i < 50; i++ {
		text := extended
		if i%2 == 1 {
			text = base
		}
		testutil.WriteFile(t, dir, "relay.hcl", text)
		before, msgs := reloads(), count()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("reload %d", i+1), func() bool { return reloads() > before })
		testutil.WaitFor(t, 10*time.Second, "messages after the reload", func() bool { return count() > msgs })
		if i%2 == 0 {
			if _, err := testutil.Send(extraAddr, testutil.Mail{User: "erin-app", Password: password, From: "erin@example.com", To: []string{"y@example.net"}}); err != nil {
				t.Fatalf("reload %d: the added listener and account: %v", i+1, err)
			}
		}
	}
	close(stop)
	wg.Wait()
	for _, err := range failures {
		t.Errorf("message failed: %v", err)
	}
	if got := sb.Tokens.Requests("alice@example.com"); got != 1 {
		t.Errorf("token requests for the unchanged account = %d, want 1", got)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the relay did not exit after SIGTERM")
	}
	if delivered := len(sb.SMTP.Messages()); delivered != count()+25 {
		t.Errorf("provider holds %d messages; clients got %d × 250", delivered, count()+25)
	}
	out := logs.String()
	tokens := sb.Tokens.IssuedAccessTokens()
	testutil.AssertNoSecrets(t, "relay logs", out, append(tokens, clientSecret, rtAlice, rtErin, password))
	if !strings.Contains(out, `"@message":"stopped"`) {
		t.Error("no clean stop in the logs")
	}
}

// TestSecondSignalExitsAtOnce holds a session open so that SIGTERM waits
// for it; a second SIGTERM must end the process immediately.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	cfgPath := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
server { shutdown_timeout = "1h" }
listener "main" {
  address  = %q
  tls_mode = "none"
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = "%s/ca.pem"
}
account_group "g" {
  provider  = "sandbox"
  client_id = "relay"
  account "alice@example.com" { refresh_token = "unused-refresh-token" }
  client "app" { password_hash = %q }
}
`, addr, sb.Tokens.URL, sb.SMTP.Addr, dir, testutil.FastHash(t, "pw")))
	cmd, logs, exited := startRelay(t, cfgPath)
	var held net.Conn
	testutil.WaitFor(t, 20*time.Second, "the relay to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			held = c
		}
		return err == nil
	})
	defer held.Close()
	testutil.WaitFor(t, 5*time.Second, "the session to start", func() bool { return strings.Contains(logs.String(), "relay started") })
	// The greeting proves the relay accepted the connection and holds a
	// session for it: a connection still in the kernel's accept queue is
	// no session, and the relay would rightly stop at once.
	_ = held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if greeting, err := bufio.NewReader(held).ReadString('\n'); err != nil || !strings.HasPrefix(greeting, "220") {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	testutil.WaitFor(t, 5*time.Second, "the first signal to be noticed", func() bool { return strings.Contains(logs.String(), "draining sessions") })
	select {
	case err := <-exited:
		t.Fatalf("exited (%v) while a session was open and the timeout is 1h", err)
	case <-time.After(300 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the second signal did not end the process")
	}
}

// startRelay runs `oauthrelay run -config cfgPath`; the process is killed
// when the test ends, and its output logged if the test failed.
func startRelay(t *testing.T, cfgPath string) (*exec.Cmd, *testutil.LogBuffer, chan error) {
	t.Helper()
	logs := &testutil.LogBuffer{}
	cmd := exec.Command(binary, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("relay output:\n%s", logs.String())
		}
	})
	return cmd, logs, exited
}
