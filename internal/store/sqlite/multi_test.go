package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/storetest"
)

// The `oauthrelay queue` commands open the database while the relay runs:
// two Store values on one directory, each with its own writer, both
// writing at once, each seeing what the other committed.
func TestTwoStoresOnOneDatabase(t *testing.T) {
	dir := t.TempDir()
	relay := openTest(t, dir, Options{})
	cli := openTest(t, dir, Options{})
	ctx := t.Context()
	// The operator's messages are not due: the relay leaves them alone
	// until the operator retries them.
	ids := seqIDs("op", 40)
	for _, id := range ids {
		m := testMsg(id)
		m.NextAttempt = time.Now().Add(time.Hour)
		if err := relay.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var last atomic.Value // the last ID the relay's Enqueue acknowledged
	stop := make(chan struct{})
	var wg sync.WaitGroup
	relayErrs := make([]error, 4)
	for g := range relayErrs {
		wg.Go(func() { relayErrs[g] = relayTraffic(relay, g, stop, &last) })
	}
	c0, m0 := relay.CommitStats()
	cliErr := operatorTraffic(t, relay, cli, ids, &last)
	c1, m1 := relay.CommitStats()
	close(stop)
	wg.Wait()
	if err := errors.Join(append(relayErrs, cliErr)...); err != nil {
		t.Fatal(err)
	}
	// Both took turns: the relay kept committing while the commands ran.
	t.Logf("the relay committed %d times (%d messages) during the commands", c1-c0, m1-m0)
	if c1 == c0 {
		t.Error("the relay made no commit while the commands ran")
	}
	st, err := cli.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("queue seen by the second store at the end: %v", st.Depth)
}

// relayTraffic enqueues, claims and delivers its own messages until stop.
func relayTraffic(s *Store, g int, stop <-chan struct{}, last *atomic.Value) error {
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		id := fmt.Sprintf("relay%d-%05d", g, i)
		if err := s.Enqueue(ctx, testMsg(id)); err != nil {
			return fmt.Errorf("relay enqueue: %w", err)
		}
		last.Store(id)
		claimed, err := s.Claim(ctx, fmt.Sprintf("relay%d", g), time.Now(), 2, time.Minute, nil)
		if err != nil {
			return fmt.Errorf("relay claim: %w", err)
		}
		for _, c := range claimed {
			if err := deliver(ctx, s, c); err != nil {
				return err
			}
		}
	}
}

func deliver(ctx context.Context, s *Store, c *store.Claimed) error {
	if c.State == store.StateHeld {
		return fmt.Errorf("claimed %s while it is held", c.ID)
	}
	rcpts := map[string]store.Recipient{}
	for _, r := range c.Rcpts {
		rcpts[r.Addr] = store.Recipient{State: store.RcptDelivered, LastReply: "250 OK"}
	}
	err := s.Finish(ctx, c.ID, c.Owner, store.Result{Counted: true, Rcpts: rcpts})
	if errors.Is(err, store.ErrLeaseLost) && errors.Is(err, store.ErrNotFound) {
		return nil // deleted by the operator meanwhile
	}
	return err
}

// operatorTraffic runs operator commands through cli while the relay
// writes, checking that each store sees the other's commits.
func operatorTraffic(t *testing.T, relay, cli *Store, ids []string, last *atomic.Value) error {
	ctx := t.Context()
	for i, id := range ids {
		if err := cli.Hold(ctx, id); err != nil {
			return fmt.Errorf("cli hold: %w", err)
		}
		if env, err := relay.Get(ctx, id); err != nil || env.State != store.StateHeld {
			return fmt.Errorf("the relay does not see %s held after the cli held it: %v", id, err)
		}
		if seen, _ := last.Load().(string); seen != "" {
			// Acknowledged, so committed: in the queue or delivered.
			if _, _, err := cli.History(ctx, seen); err != nil {
				return fmt.Errorf("the cli does not see %s, acknowledged by the relay: %w", seen, err)
			}
		}
		if err := operatorStep(ctx, cli, id, i); err != nil {
			return err
		}
	}
	_, err := cli.List(ctx, store.Filter{})
	return err
}

func operatorStep(ctx context.Context, cli *Store, id string, i int) error {
	var err error
	switch i % 3 {
	case 0:
		err = cli.Delete(ctx, id)
	case 1:
		err = errors.Join(cli.Retry(ctx, id, time.Now()), cli.Release(ctx, id))
	default:
		_, err = cli.List(ctx, store.Filter{State: store.StateHeld})
	}
	if err != nil {
		return fmt.Errorf("cli step %d on %s: %w", i%3, id, err)
	}
	if i%3 == 0 {
		if _, err := storetest.ReadBody(context.Background(), cli, id); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("body of %s after the cli deleted it: %v", id, err)
		}
	}
	return nil
}
