package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fsyncEvents are the kernel tracepoints of the calls that make SQLite's
// writes durable (it uses fdatasync(2) where the system has it). perf
// counts them in the kernel, so the relay is not slowed down as it would
// be under strace.
var fsyncEvents = []string{"syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync"}

// The tracepoints of write(2) and read(2): the relay's network I/O (SQLite
// writes its files with pwrite64), with -count-syscalls.
var (
	writeEvents = []string{"syscalls:sys_enter_write"}
	readEvents  = []string{"syscalls:sys_enter_read"}
)

// syscallCounter is a `perf stat` attached to the relay process.
type syscallCounter struct {
	events []string
	cmd    *exec.Cmd
	out    string
	stderr *lockedBuffer
	exited chan struct{}
}

// countFsyncs starts counting the fsyncs of every thread of pid (threads
// started later too: perf's counters are inherited) and returns once perf
// has attached. It needs perf and access to the tracepoints (root, or
// kernel.perf_event_paranoid ≤ -1).
func countFsyncs(pid int) (*syscallCounter, error) { return countSyscalls(pid, fsyncEvents) }

// countSyscalls is countFsyncs for other events.
func countSyscalls(pid int, events []string) (*syscallCounter, error) {
	bin, err := exec.LookPath("perf")
	if err != nil {
		return nil, errors.New("perf is not installed")
	}
	f, err := os.CreateTemp("", "oauthrelay-bench-perf-")
	if err != nil {
		return nil, err
	}
	f.Close()
	c := &syscallCounter{events: events, out: f.Name(), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "stat", "-x", ",", "-e", strings.Join(events, ","), "-p", strconv.Itoa(pid), "-o", c.out)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		os.Remove(c.out)
		return nil, err
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	if err := c.awaitAttached(pid); err != nil {
		_, _ = c.stop()
		return nil, err
	}
	return c, nil
}

// awaitAttached waits until perf holds a counter per event for every
// thread of pid.
func (c *syscallCounter) awaitAttached(pid int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("perf stat failed: %s", firstLine(c.stderr.String()))
		default:
		}
		threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if n := perfEventFDs(c.cmd.Process.Pid); len(threads) > 0 && n >= len(threads)*len(c.events) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("perf stat did not attach to the relay")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// perfEventFDs counts the perf_event file descriptors process pid holds.
func perfEventFDs(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == "anon_inode:[perf_event]" {
			n++
		}
	}
	return n
}

// stop ends the count and returns the calls counted. A nil counter (perf
// could not start) returns an error.
func (c *syscallCounter) stop() (int, error) {
	if c == nil {
		return 0, errors.New("not counting")
	}
	defer os.Remove(c.out)
	_ = c.cmd.Process.Signal(syscall.SIGINT) // perf writes its counts on SIGINT
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return 0, errors.New("perf stat did not stop")
	}
	return parsePerfCSV(c.out, len(c.events))
}

// parsePerfCSV sums the counts of `perf stat -x ,` output (events of them):
// lines of value,unit,event,… ; comments start with #.
func parsePerfCSV(path string, events int) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total, seen := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) < 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		n, err := strconv.Atoi(fields[0])
		if err != nil {
			return 0, fmt.Errorf("perf stat: %s %s", fields[2], fields[0]) // <not counted>, <not supported>
		}
		total += n
		seen++
	}
	if seen != events {
		return 0, fmt.Errorf("perf stat reported %d of %d events", seen, events)
	}
	return total, sc.Err()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
