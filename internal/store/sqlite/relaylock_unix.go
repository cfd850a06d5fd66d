//go:build unix

package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockRelay takes the relay's exclusive lock on the store (flock(2) on
// RelayLockFileName, which the kernel drops with the process) and writes
// the process ID into the file for the error of the next one.
func lockRelay(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if err := flockPatiently(f); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w%s", ErrInUse, holder(f))
		}
		return nil, fmt.Errorf("store: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// probePatience is how long a relay tries for its lock before it takes
// the store for another relay's: a queue command that asks whether a
// relay runs (relayHolding) holds a shared lock for an instant, and a
// relay starting in that instant must not fail.
const probePatience = time.Second

func flockPatiently(f *os.File) error {
	fd := int(f.Fd())
	return retryWhile(context.Background(), probePatience,
		func(err error) bool { return errors.Is(err, syscall.EWOULDBLOCK) },
		func() error { return syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) })
}

// holder names the process holding the lock, as it wrote itself in.
func holder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid := strings.TrimSpace(string(b[:n])); pid != "" {
		return " (process " + pid + ")"
	}
	return ""
}

// relayHolding reports whether a relay holds its lock on the store at
// path, and names it; it takes nothing (a shared lock, released at once).
func relayHolding(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false // no relay ever ran on the store
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return holder(f), errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return "", false
}
