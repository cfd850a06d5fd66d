package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// crashChildEnv, when set to a directory, makes TestEnqueueSurvivesKill
// the child process: it enqueues into that directory until killed.
const crashChildEnv = "OAUTHRELAY_STORE_CRASH_CHILD"

// An Enqueue that returned nil survives the process being killed: the
// child prints each ID once Enqueue has returned, the parent SIGKILLs it
// mid-stream, reopens the store and finds every printed ID with its body.
func TestEnqueueSurvivesKill(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestEnqueueSurvivesKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := readAcks(stdout, 400, func() { _ = cmd.Process.Kill() })
	err = cmd.Wait()
	if len(acked) < 400 {
		t.Fatalf("the child acknowledged %d messages before it ended (%v): %s", len(acked), err, stderr.String())
	}
	t.Logf("child killed after %d acknowledged enqueues (%v)", len(acked), err)
	checkSurvivors(t, dir, acked)
}

// readAcks collects the IDs the child printed; once it has n, it calls
// kill and goes on reading what the child wrote before it died.
func readAcks(out interface{ Read([]byte) (int, error) }, n int, kill func()) []string {
	var acked []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "ENQUEUED "); ok {
			acked = append(acked, id)
			if len(acked) == n {
				kill()
			}
		}
	}
	return acked
}

func checkSurvivors(t *testing.T, dir string, acked []string) {
	t.Helper()
	s := openTest(t, dir, Options{})
	for _, id := range acked {
		got, err := storetest.ReadBody(context.Background(), s, id)
		if err != nil {
			t.Errorf("%s was acknowledged but is lost: %v", id, err)
			continue
		}
		if sha256.Sum256(got) != sha256.Sum256(crashBody(id)) {
			t.Errorf("%s: body of %d bytes differs from the one enqueued", id, len(got))
		}
	}
	list, err := s.List(t.Context(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) < len(acked) {
		t.Errorf("%d messages in the queue, %d acknowledged", len(list), len(acked))
	}
}

// crashBody is the body of a message of the crash test: its size varies
// with its ID, from a few bytes to more than two chunks.
func crashBody(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	size := int(binary.BigEndian.Uint32(sum[:4]) % (600 << 10))
	if sum[4]%4 != 0 {
		size %= 4096 // most messages are small
	}
	return bytes.Repeat(sum[:], size/len(sum)+1)[:size]
}

// crashChild enqueues from 8 goroutines until it is killed, printing
// each ID after its Enqueue returned. Should the parent die first, it
// gives up on its own after a minute.
func crashChild(dir string) {
	time.AfterFunc(time.Minute, func() { os.Exit(4) })
	s, err := Open(context.Background(), dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("g%d-%06d", g, i)
				m := testMsg(id)
				m.Body = bytes.NewReader(crashBody(id))
				if err := s.Enqueue(context.Background(), m); err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ENQUEUED %s\n", id)
				mu.Unlock()
			}
		}()
	}
	select {} // until killed
}
