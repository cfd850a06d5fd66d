package main

import (
	"fmt"
	"os"
)

// countIO is -count-syscalls: the relay scenarios count the relay's
// write(2) and read(2) calls, mostly its network I/O, each of which on
// loopback also runs the receiver's TCP stack. The tracepoints cost a
// little on every call, so it is off by default.
var countIO bool

// ioMeter counts a relay's write(2) and read(2) calls over a scenario.
type ioMeter struct{ writes, reads *syscallCounter }

// startIO starts counting (nil: not asked for, or perf could not).
func startIO(relay *relayProc) *ioMeter {
	if !countIO || relay == nil {
		return nil
	}
	pid := relay.cmd.Process.Pid
	w, err := countSyscalls(pid, writeEvents)
	if err != nil {
		fmt.Fprintln(os.Stderr, "  counting write(2):", err)
		return nil
	}
	r, err := countSyscalls(pid, readEvents)
	if err != nil {
		_, _ = w.stop()
		fmt.Fprintln(os.Stderr, "  counting read(2):", err)
		return nil
	}
	return &ioMeter{writes: w, reads: r}
}

// done stops the counts and records them per message of s.
func (m *ioMeter) done(s *scenario) {
	if m == nil {
		return
	}
	w, werr := m.writes.stop()
	r, rerr := m.reads.stop()
	if werr != nil || rerr != nil || s.Messages == 0 {
		fmt.Fprintln(os.Stderr, "  write(2)/read(2) not counted:", werr, rerr)
		return
	}
	s.WritesPerMsg = float64(w) / float64(s.Messages)
	s.ReadsPerMsg = float64(r) / float64(s.Messages)
}

func printIO(r report) {
	header := false
	for _, s := range r.Scenarios {
		if s.WritesPerMsg == 0 {
			continue
		}
		if !header {
			fmt.Println("\nthe relay's write(2) / read(2) calls per message over the scenario (-count-syscalls; the queue's deliveries run beside its accepting):")
			header = true
		}
		fmt.Printf("  %-50s %6.2f / %6.2f\n", s.Name, s.WritesPerMsg, s.ReadsPerMsg)
	}
}
