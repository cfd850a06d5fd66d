//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// turnstile holds two open file descriptions of the turn file: flock(2)
// locks belong to one, so the process can hold a shared lock on one
// (announce) and test for others' locks on the other (othersWaiting).
type turnstile struct {
	announceFile, checkFile *os.File
}

func openTurnstile(path string) (*turnstile, error) {
	var files [2]*os.File
	for i := range files {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			for _, g := range files[:i] {
				g.Close()
			}
			return nil, fmt.Errorf("store: opening %s: %w", path, err)
		}
		files[i] = f
	}
	return &turnstile{announceFile: files[0], checkFile: files[1]}, nil
}

// othersWaiting reports whether another writer announced that it waits.
func (t *turnstile) othersWaiting() bool {
	fd := int(t.checkFile.Fd())
	err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// announce tells other writers that this one waits, until the returned
// function is called. The kernel drops the lock of a process that dies.
func (t *turnstile) announce() (done func()) {
	fd := int(t.announceFile.Fd())
	if syscall.Flock(fd, syscall.LOCK_SH) != nil {
		return func() {}
	}
	return func() { _ = syscall.Flock(fd, syscall.LOCK_UN) }
}

func (t *turnstile) close() error {
	return errors.Join(t.announceFile.Close(), t.checkFile.Close())
}
