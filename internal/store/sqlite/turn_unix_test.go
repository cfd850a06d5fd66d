//go:build unix

package sqlite

import (
	"path/filepath"
	"testing"
)

func TestTurnstileAnnouncesWaiters(t *testing.T) {
	path := filepath.Join(t.TempDir(), TurnFileName)
	a, err := openTurnstile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	b, err := openTurnstile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if a.othersWaiting() || b.othersWaiting() {
		t.Fatal("waiters seen before any announced")
	}
	done := a.announce()
	if !b.othersWaiting() {
		t.Error("b does not see a waiting")
	}
	done()
	if b.othersWaiting() {
		t.Error("b still sees a waiting after it stopped")
	}
}
