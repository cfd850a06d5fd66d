package httpsend_test

import (
	"context"
	"errors"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func TestSlotsPerMailbox(t *testing.T) {
	s := httpsend.NewSlots(2)
	ctx := context.Background()
	var releases []func()
	for _, m := range []string{"a@x.test", "A@X.test"} { // one mailbox, any case
		r, err := s.Acquire(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	full, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Acquire(full, "a@x.test"); !errors.Is(err, context.Canceled) {
		t.Fatalf("third slot: %v, want to wait until ctx ends", err)
	}
	other, err := s.Acquire(ctx, "b@x.test")
	if err != nil {
		t.Fatalf("another mailbox: %v", err)
	}
	other()
	releases[0]()
	releases[0]() // a second release frees nothing more
	r, err := s.Acquire(ctx, "a@x.test")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := s.Acquire(full, "a@x.test"); err == nil {
		t.Fatal("a double release freed two slots")
	}
	r()
	releases[1]()
}

// TestSlotsWaitForARelease: a waiting request gets the slot given back.
func TestSlotsWaitForARelease(t *testing.T) {
	s := httpsend.NewSlots(1)
	ctx := context.Background()
	first, err := s.Acquire(ctx, "a@x.test")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error)
	go func() {
		r, err := s.Acquire(ctx, "a@x.test")
		if err == nil {
			r()
		}
		got <- err
	}()
	first()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestBusy(t *testing.T) {
	f := httpsend.Busy("Test API", context.DeadlineExceeded)
	if f.Err.Kind != transport.KindBusy || f.Err.Reply.Code != 451 || f.Err.Attempted() || f.Account != 0 || f.Provider != 0 {
		t.Fatalf("%+v", f.Err)
	}
}
