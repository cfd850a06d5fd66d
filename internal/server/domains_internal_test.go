package server

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/relay"
)

// A domain-wide account at max_mailboxes makes room only by forgetting a
// mailbox idle for more than a day (whose daily counts no longer matter);
// recent lists the mailboxes a reload carries over, newest first.
func TestDomainAccountEviction(t *testing.T) {
	now := time.Now()
	reg := newRegistry(hclog.NewNullLogger())
	da := &domainAccount{d: deps{registry: reg, log: hclog.NewNullLogger()}, boxes: map[string]*domainBox{}}
	box := func(addr string, idle time.Duration) {
		da.boxes[addr] = &domainBox{m: &mailbox{acct: &relay.Account{Address: addr}}, used: now.Add(-idle)}
	}
	box("new@x.test", time.Minute)
	box("day@x.test", 23*time.Hour)
	if da.evictIdle(now) {
		t.Fatal("evicted a mailbox used within the day")
	}
	box("old@x.test", 26*time.Hour)
	if !da.evictIdle(now) {
		t.Fatal("kept a mailbox idle for 26 hours at max_mailboxes")
	}
	if _, ok := da.boxes["old@x.test"]; ok || len(da.boxes) != 2 {
		t.Errorf("boxes after eviction: %v", da.boxes)
	}
	recent := da.recent(1)
	if len(recent) != 1 || recent[0].m.acct.Address != "new@x.test" {
		t.Errorf("recent(1) = %v", recent)
	}
}
