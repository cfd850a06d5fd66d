//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "var", "lib", "oauthrelay")
	s := openTest(t, dir, Options{})
	if err := s.Enqueue(t.Context(), testMsg("m1")); err != nil {
		t.Fatal(err)
	}
	wantMode(t, dir, fs.ModeDir|0o700)
	for _, name := range []string{FileName, FileName + "-wal", FileName + "-shm"} {
		wantMode(t, filepath.Join(dir, name), 0o600)
	}
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s has mode %v, want %v", filepath.Base(path), fi.Mode(), want)
	}
}

// One relay at a time: a second relay's Open of the store fails and names
// the process that has it; the queue commands (not exclusive) still open
// it; once the first closes, another relay may open it.
func TestExclusiveOpenKeepsASecondRelayOut(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(t.Context(), dir, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), dir, Options{Exclusive: true})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) {
		t.Fatalf("second exclusive Open: %v, want ErrInUse naming process %d", err, os.Getpid())
	}
	cli, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatalf("a queue command's Open beside the relay: %v", err)
	}
	cli.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(t.Context(), dir, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive Open after the first relay closed: %v", err)
	}
	again.Close()
}

// A queue command of a newer oauthrelay must not migrate the store under
// a relay of the older version that still runs on it (the package was
// upgraded, the relay not yet restarted): the relay would go on with a
// schema it does not know. It refuses, naming the relay, and changes
// nothing; once the relay is gone (restarted with the new version, which
// migrates itself), the store opens.
func TestQueueCommandDoesNotMigrateUnderARunningRelay(t *testing.T) {
	dir := t.TempDir()
	db := rawDBAtVersion(t, dir, 2)
	relay, err := lockRelay(filepath.Join(dir, RelayLockFileName))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), dir, Options{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) ||
		!strings.Contains(err.Error(), "schema") {
		t.Fatalf("Open of an older store beside its relay: %v, want ErrInUse naming the schema and process %d", err, os.Getpid())
	}
	var version int
	if err := db.QueryRow(`SELECT MAX(version) FROM schema_version`).Scan(&version); err != nil || version != 2 {
		t.Fatalf("schema version %d (%v) after the refused Open, want 2", version, err)
	}
	relay.Close()
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatalf("Open once the relay is gone: %v", err)
	}
	s.Close()
}

// A queue command asking whether a relay runs (relayHolding, a shared
// lock for an instant) must not make a relay starting at that moment
// fail as if another relay had the store.
func TestRelayStartsBesideAProbe(t *testing.T) {
	path := filepath.Join(t.TempDir(), RelayLockFileName)
	probe, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	fd := int(probe.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond) // the probe's instant, made long
		_ = syscall.Flock(fd, syscall.LOCK_UN)
	}()
	relay, err := lockRelay(path)
	if err != nil {
		t.Fatalf("a relay starting while a queue command probes: %v", err)
	}
	relay.Close()
}
