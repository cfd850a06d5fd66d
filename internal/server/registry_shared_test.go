package server

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// unreachableCoordinator is a shared database that does not answer; the
// calls the test does not expect panic (the nil interface).
type unreachableCoordinator struct{ store.Coordinator }

func (unreachableCoordinator) ReserveMessage(context.Context, string, time.Time, store.SharedLimits) (*store.Grant, error) {
	return nil, store.ErrUnavailable
}

func (unreachableCoordinator) Charge(context.Context, string, store.Charge, time.Time, store.SharedLimits) error {
	return store.ErrUnavailable
}

// TestSharedLimitsShareSurvivesAReload: while the shared database is
// unreachable an instance sends on its share of each limit; a reload
// that changes an account's limits must not give it a fresh share (local
// limits keep their counts the same way).
func TestSharedLimitsShareSurvivesAReload(t *testing.T) {
	co := limits.NewCoordination(unreachableCoordinator{}, limits.CoordinationSettings{Owner: "a", Instances: 3, RetryAfter: time.Hour})
	reg := newRegistry(hclog.NewNullLogger())
	load := func(daily int) limits.Limiter {
		p := reg.newPlan()
		l := p.accountLimits(limitsKey{account: "box@example.com", limits: config.Limits{DailyMessageLimit: daily}}, co)
		reg.commit(p, time.Now())
		return l
	}
	sendAll := func(l limits.Limiter) (sent int) {
		for range 20 {
			r, err := l.Reserve(time.Now())
			if err != nil {
				return sent
			}
			r.Commit()
			sent++
		}
		return sent
	}
	if n := sendAll(load(9)); n != 3 {
		t.Fatalf("sent %d on the share of 9 of 3 instances, want 3", n)
	}
	if n := sendAll(load(9)); n != 0 {
		t.Fatalf("after a reload that changed nothing: %d more sent, want 0", n)
	}
	if n := sendAll(load(12)); n != 1 {
		t.Fatalf("after a reload to 12 a day (a share of 4): %d more sent, want 1", n)
	}
}
