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
