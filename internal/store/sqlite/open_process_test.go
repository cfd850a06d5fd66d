package sqlite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// openerChildEnv, when set, makes TestOpenConcurrentlyFromProcesses the
// child process: it opens the store in each directory named on its
// standard input and answers each with a line.
const openerChildEnv = "OAUTHRELAY_STORE_OPENER_CHILD"

// Processes open one new directory at once, round after round, as two
// relays started together or `oauthrelay queue list` beside a relay that
// starts: none fails.
func TestOpenConcurrentlyFromProcesses(t *testing.T) {
	if os.Getenv(openerChildEnv) != "" {
		openerChild(os.Stdin, os.Stdout)
		return
	}
	const children, rounds = 3, 20
	var kids []*opener
	for range children {
		kids = append(kids, startOpener(t))
	}
	for round := range rounds {
		dir := t.TempDir()
		for _, k := range kids {
			k.open(dir)
		}
		errs := []error{openPingClose(dir)}
		for _, k := range kids {
			errs = append(errs, k.result())
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		wantMigratedOnce(t, dir)
	}
}

// wantMigratedOnce checks that dir's database has every migration once.
func wantMigratedOnce(t *testing.T, dir string) {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var versions, newest int
	err = rawDB(t, dir).QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&versions, &newest)
	if err != nil || versions != len(ms) || newest != len(ms) {
		t.Fatalf("schema_version has %d rows up to version %d for %d migrations (%v)", versions, newest, len(ms), err)
	}
}

// opener is a child process that opens stores when told to.
type opener struct {
	in  io.WriteCloser
	out *bufio.Scanner
}

func startOpener(t *testing.T) *opener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOpenConcurrentlyFromProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), openerChildEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close() // the child ends at the end of its input
		if err := cmd.Wait(); err != nil {
			t.Errorf("opener child: %v", err)
		}
		cancel()
	})
	return &opener{in: in, out: bufio.NewScanner(out)}
}

func (o *opener) open(dir string) {
	fmt.Fprintln(o.in, dir)
}

// result reads the child's answer to the last open.
func (o *opener) result() error {
	for o.out.Scan() {
		line := o.out.Text()
		if line == "OPENED" {
			return nil
		}
		if msg, ok := strings.CutPrefix(line, "FAILED "); ok {
			return errors.New("child: " + msg)
		}
	}
	return fmt.Errorf("the opener child ended: %v", o.out.Err())
}

// openerChild opens, pings and closes the store in each directory read
// from in, answering OPENED or FAILED and the error on out.
func openerChild(in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if err := openPingClose(sc.Text()); err != nil {
			fmt.Fprintf(out, "FAILED %q\n", err.Error())
		} else {
			fmt.Fprintln(out, "OPENED")
		}
	}
}
