package main_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestMemoryIsBounded sends 20 messages of 33 MB at once through the relay
// binary with its default memory budget: every client gets 250 (what does
// not fit in memory spills to encrypted temporary files) and the relay's
// peak RSS stays under 600 MB.
func TestMemoryIsBounded(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	sb.SMTP.DiscardBodies()
	dir := t.TempDir()
	sb.Tokens.AddClient("relay", "memory-client-secret")
	rt := sb.Tokens.IssueRefreshToken("relay", "alice@example.com", config.GoogleScope)
	testutil.WriteFile(t, dir, "ca.pem", string(sb.CA.PEM))
	testutil.WriteFile(t, dir, "rt", rt)
	const password = "memory-test-password"
	addr := testutil.FreeAddr(t)
	spool := t.TempDir()
	cfg := testutil.WriteFile(t, dir, "relay.hcl", fmt.Sprintf(`
server { spool_dir = %q }
listener "main" {
  address  = %q
  tls_mode = "none"
  max_connections_per_ip = 0
}
provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  ca_file      = "%s/ca.pem"
  max_connections = 20
}
account_group "g" {
  provider      = "sandbox"
  client_id     = "relay"
  client_secret = "memory-client-secret"
  account "alice@example.com" { refresh_token = "file://%s/rt" }
  client "app" { password_hash = %q }
}
`, spool, addr, sb.Tokens.URL, sb.SMTP.Addr, dir, dir, testutil.FastHash(t, password)))
	cmd, _, _ := startRelay(t, cfg)
	testutil.WaitFor(t, 10*time.Second, "the relay to listen", func() bool {
		_, err := testutil.Send(addr, testutil.Mail{User: "app", Password: password, From: "alice@example.com", To: []string{"x@example.net"}})
		return err == nil
	})
	body := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 33_000_000/1000)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := testutil.Send(addr, testutil.Mail{User: "app", Password: password, From: "alice@example.com", To: []string{"x@example.net"}, Body: body})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a 33 MB message: %v", err)
		}
	}
	if n := len(sb.SMTP.Messages()); n != 21 {
		t.Errorf("the provider got %d messages, want 21", n)
	}
	peak := peakRSS(t, cmd.Process.Pid)
	t.Logf("relay peak RSS: %d MB", peak>>20)
	if peak > 600<<20 {
		t.Errorf("relay peak RSS %d MB, want under 600 MB", peak>>20)
	}
	if entries, _ := os.ReadDir(spool); len(entries) != 0 {
		t.Errorf("%d files left in the spool directory", len(entries))
	}
}

// peakRSS reads a process's peak resident set size (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
