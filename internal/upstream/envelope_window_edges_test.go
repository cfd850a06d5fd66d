package upstream

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// numberedRcpts are n recipients r000@example.net, r001@…
func numberedRcpts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("r%03d@example.net", i)
	}
	return out
}

// onConn matches the provider's nth connection.
func onConn(n int) func(int) bool { return func(c int) bool { return c == n } }

// Envelopes around the pipelining windows' edges (maxUnansweredCommands)
// with connections breaking at and around them, on the replay too, and
// refused recipients: the pipelined envelope must match the stepwise one,
// and a delivered message holds exactly the recipients accepted.
func TestPipelinedWindowsMatchStepwise(t *testing.T) {
	type tc struct {
		name  string
		n     int
		rules []rule
	}
	var cases []tc
	for _, n := range []int{98, 99, 100, 101, 102, 199, 200, 201} {
		for _, k := range []int{0, 1, 97, 98, 99, 100, 101, n - 1} {
			if k >= n {
				continue
			}
			for _, how := range []string{"", closing} {
				cases = append(cases, tc{fmt.Sprintf("n%d_break%d_%q", n, k, how), n,
					[]rule{{fmt.Sprintf("RCPT TO:<r%03d@", k), how, first}}})
			}
		}
		cases = append(cases, tc{fmt.Sprintf("n%d_DATA_lost", n), n, []rule{{"DATA", "", first}}})
		// A break at r005, then DATA lost on the replay (held recipients and a window edge).
		cases = append(cases, tc{fmt.Sprintf("n%d_break5_then_DATA_lost", n), n,
			[]rule{{"RCPT TO:<r005@", "", first}, {"DATA", "", onConn(2)}}})
		// A break at the last recipient, then the replays break at r050 and r120.
		cases = append(cases, tc{fmt.Sprintf("n%d_break_last_then_replay_breaks", n), n,
			[]rule{{fmt.Sprintf("RCPT TO:<r%03d@", n-1), "", first}, {"RCPT TO:<r050@", "", onConn(2)}, {"RCPT TO:<r120@", closing, onConn(3)}}})
		cases = append(cases, tc{fmt.Sprintf("n%d_refused_then_break", n), n,
			[]rule{{"RCPT TO:<r00", noUser, nil}, {"RCPT TO:<r099@", "", first}, {"RCPT TO:<r100@", "", onConn(2)}}})
		cases = append(cases, tc{fmt.Sprintf("n%d_all_refused", n), n, []rule{{"RCPT", noUser, nil}}})
		cases = append(cases, tc{fmt.Sprintf("n%d_all_refused_DATA_lost", n), n, []rule{{"RCPT", noUser, nil}, {"DATA", "", nil}}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := envelopeScenario{provider: scripts(c.rules...), rcpts: numberedRcpts(c.n)}
			step := sc.run(t, beginStepwise)
			pipe := sc.run(t, beginPipelined)
			if pipe.Body == "" && pipe.Begin == "" {
				var acc []string
				for i, v := range pipe.Verdicts {
					if v == "" {
						acc = append(acc, sc.rcpts[i])
					}
				}
				if len(acc) > 0 {
					if len(pipe.Delivered) != 1 || pipe.Delivered[0] != strings.Join(acc, ",") {
						t.Errorf("accepted %d, delivered %v", len(acc), len(pipe.Delivered))
					}
				}
			}
			if pipe.Negative {
				t.Errorf("a quota share went negative")
			}
			step.Conns, pipe.Conns, step.Discarded, pipe.Discarded = 0, 0, 0, 0
			if d := cmp.Diff(step, pipe); d != "" {
				t.Errorf("stepwise vs pipelined:\n%s", d)
			}
		})
	}
}

// The replay of 150 accepted recipients (two windows) is refused one of
// them once (a 450 on the second connection), then the provider behaves.
func TestReplayOverWindowsRefusedOnce(t *testing.T) {
	for _, n := range []int{160, 250} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			mk := func() respondFunc {
				var refusedOnce atomic.Bool
				return func(conn int, line string) (string, bool) {
					switch {
					case conn == 1 && strings.HasPrefix(line, "RCPT TO:<r150@"):
						return "", true
					case conn == 2 && strings.HasPrefix(line, "RCPT TO:<r120@") && refusedOnce.CompareAndSwap(false, true):
						return "450 4.2.1 later", false
					}
					return accepting(line), false
				}
			}
			sc := envelopeScenario{provider: mk, rcpts: numberedRcpts(n)}
			step := sc.run(t, beginStepwise)
			pipe := sc.run(t, beginPipelined)
			var acc []string
			for i, v := range pipe.Verdicts {
				if v == "" {
					acc = append(acc, sc.rcpts[i])
				}
			}
			if pipe.Body == "" && (len(pipe.Delivered) != 1 || pipe.Delivered[0] != strings.Join(acc, ",")) {
				t.Errorf("accepted %d; delivered %d messages", len(acc), len(pipe.Delivered))
			}
			step.Conns, pipe.Conns, step.Discarded, pipe.Discarded = 0, 0, 0, 0
			if d := cmp.Diff(step, pipe); d != "" {
				t.Errorf("stepwise vs pipelined:\n%s", d)
			}
		})
	}
}
