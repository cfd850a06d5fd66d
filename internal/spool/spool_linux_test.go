package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// The spill file has no name on disk, mode 0600, and holds no plaintext:
// read through /proc/self/fd while the message still has it open.
func TestSpillFileIsUnlinkedPrivateAndEncrypted(t *testing.T) {
	dir := t.TempDir()
	b := NewBudget(chunk, dir)
	m := b.New()
	defer m.Release()
	marker := []byte("RECOGNIZABLE-PLAINTEXT-0123456789|")
	data := bytes.Repeat(marker, 3*chunk/len(marker)+1)[:3*chunk]
	mustWrite(t, m, data)
	if !m.Spilled() {
		t.Fatal("message of 3 chunks under a 1-chunk budget did not spill")
	}
	assertSame(t, "content", readAll(t, m), data) // also seals the last record

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("spill directory lists %d entries (first %q), want none: the file must be unlinked", len(entries), entries[0].Name())
	}
	fdPath := fmt.Sprintf("/proc/self/fd/%d", m.spill.f.Fd())
	target, err := os.Readlink(fdPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(target, "(deleted)") {
		t.Errorf("open spill file is %q, want it deleted", target)
	}
	info, err := m.spill.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("spill file mode %v, want 0600", perm)
	}

	onDisk, err := os.ReadFile(fdPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * recordSize; len(onDisk) != want {
		t.Errorf("spill file holds %d bytes, want %d (3 sealed records)", len(onDisk), want)
	}
	// No trace of the content, not even a short piece of the marker.
	for _, piece := range [][]byte{marker, marker[:8], []byte("0123456789")} {
		if bytes.Contains(onDisk, piece) {
			t.Errorf("spill file contains plaintext %q", piece)
		}
	}
}

// A write error on the spill file (here EFBIG from the file size limit,
// as the disk being full would give ENOSPC) fails the write with ErrFull
// wrapping the cause, and Release still returns everything.
func TestSpillWriteFailure(t *testing.T) {
	dir := t.TempDir()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	// The Go runtime ignores SIGXFSZ, so writes past the limit fail with
	// EFBIG instead of killing the process. The limit is process-wide:
	// this test must not run in parallel with others.
	limited := old
	limited.Cur = 2 * recordSize
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Errorf("restoring RLIMIT_FSIZE: %v", err)
		}
	})

	b := NewBudget(2*chunk, dir)
	m := b.New()
	data := randomBytes(8*chunk, 4)
	_, err := m.Write(data)
	restore := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if restore != nil {
		t.Fatal(restore)
	}
	if !errors.Is(err, ErrFull) || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Write past the file size limit: %v, want ErrFull wrapping EFBIG", err)
	}
	if _, err := m.Reader(); !errors.Is(err, ErrFull) {
		t.Errorf("Reader after a failed spill: %v, want ErrFull", err)
	}
	m.Release()
	m.Release()
	if got := b.InUse(); got != 0 {
		t.Errorf("InUse() after Release = %d, want 0", got)
	}
}
