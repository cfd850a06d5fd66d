package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestMain runs the fsync helper when asked: a process that, once told on
// stdin, fsyncs and fdatasyncs a file from new threads.
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_FSYNC_HELPER") == "1" {
		fsyncHelper()
		return
	}
	os.Exit(m.Run())
}

const helperThreads, helperCalls = 4, 25

func fsyncHelper() {
	f, err := os.CreateTemp("", "oauthrelay-bench-fsync-")
	if err != nil {
		os.Exit(1)
	}
	defer os.Remove(f.Name())
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	_, _ = in.ReadString('\n')
	var wg sync.WaitGroup
	for range helperThreads {
		wg.Go(func() {
			runtime.LockOSThread() // threads started after perf attached
			for range helperCalls {
				_, _ = f.Write([]byte("x"))
				_ = f.Sync()
				_ = syscall.Fdatasync(int(f.Fd()))
			}
		})
	}
	wg.Wait()
	fmt.Println("done")
	_, _ = io.Copy(io.Discard, in)
}

// TestCountFsyncs counts the calls of a real process, threads started
// after perf attached included. It needs perf and access to the
// syscall tracepoints, and is skipped without them.
func TestCountFsyncs(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BENCH_FSYNC_HELPER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	out := bufio.NewReader(stdout)
	expectLine(t, out, "ready")

	c, err := countFsyncs(cmd.Process.Pid)
	if err != nil {
		t.Skipf("cannot count fsyncs here: %v", err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	expectLine(t, out, "done")
	got, err := c.stop()
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * helperThreads * helperCalls; got != want {
		t.Errorf("counted %d fsync and fdatasync calls, want %d", got, want)
	}
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("helper said %q (%v), want %q", line, err, want)
	}
}

func TestStopWithoutCounter(t *testing.T) {
	var c *syscallCounter
	if _, err := c.stop(); err == nil {
		t.Error("stop of a counter that never started: no error")
	}
}
