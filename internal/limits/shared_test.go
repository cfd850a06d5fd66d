package limits

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// memCoord is an in-memory store.Coordinator for the limits' own logic
// (the database engines pass storetest.RunCoordinator). down makes every
// call fail as an unreachable database does; cut does so for one owner's
// slot calls (a partition); hang makes calls wait for their context (a
// database that stopped answering); broken makes them fail as a bug does.
type memCoord struct {
	mu     sync.Mutex
	down   bool
	hang   bool
	broken error
	cut    map[string]bool // owner → its slot calls fail
	// loseReplies makes AcquireSlot take the slot and then fail, as a
	// connection lost after the commit does.
	loseReplies bool
	calls       int
	// byMethod counts the calls of each method: the round trips.
	byMethod map[string]int
	msgs     map[string]int // key -> messages counted (one window: tests are short)
	rcpts    map[string]int
	slots    map[string]map[int]memSlot
	wants    map[string]map[string]time.Time // key → owner → until
	// charges are the Charge calls that landed.
	charges []store.Charge
}

type memSlot struct {
	owner string
	until time.Time
}

func newMemCoord() *memCoord {
	return &memCoord{msgs: map[string]int{}, rcpts: map[string]int{}, slots: map[string]map[int]memSlot{}, wants: map[string]map[string]time.Time{},
		cut: map[string]bool{}, byMethod: map[string]int{}}
}

func (m *memCoord) setDown(down bool) { m.mu.Lock(); m.down = down; m.mu.Unlock() }

func (m *memCoord) setCut(owner string, cut bool) { m.mu.Lock(); m.cut[owner] = cut; m.mu.Unlock() }

func (m *memCoord) setHang(hang bool) { m.mu.Lock(); m.hang = hang; m.mu.Unlock() }

func (m *memCoord) setBroken(err error) { m.mu.Lock(); m.broken = err; m.mu.Unlock() }

func (m *memCoord) setLoseReplies(lose bool) { m.mu.Lock(); m.loseReplies = lose; m.mu.Unlock() }

// count returns how many calls of method were made.
func (m *memCoord) count(method string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byMethod[method]
}

// enter starts a call of method (by owner, "" for account calls) and
// returns with m.mu held, or fails as the coordinator's state says.
func (m *memCoord) enter(ctx context.Context, method, owner string) error {
	m.mu.Lock()
	m.calls++
	m.byMethod[method]++
	switch {
	case m.hang:
		m.mu.Unlock()
		<-ctx.Done()
		return fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
	case m.down || m.cut[owner]:
		m.mu.Unlock()
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	case m.broken != nil:
		m.mu.Unlock()
		return m.broken
	}
	return nil
}

func (m *memCoord) ReserveMessage(ctx context.Context, key string, now time.Time, l store.SharedLimits) (*store.Grant, error) {
	if err := m.enter(ctx, "ReserveMessage", ""); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if l.DailyMsgs > 0 && m.msgs[key] >= l.DailyMsgs {
		return nil, &store.Refusal{Kind: store.RefusedDailyMsgs, Limit: l.DailyMsgs, RetryAt: now.Add(time.Hour)}
	}
	m.msgs[key]++
	return &store.Grant{Bucket: 1}, nil
}

func (m *memCoord) ReserveRcpt(ctx context.Context, key string, _ *store.Grant, now time.Time, l store.SharedLimits) error {
	if err := m.enter(ctx, "ReserveRcpt", ""); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if l.DailyRcpts > 0 && m.rcpts[key] >= l.DailyRcpts {
		return &store.Refusal{Kind: store.RefusedDailyRcpts, Limit: l.DailyRcpts, RetryAt: now.Add(time.Hour)}
	}
	m.rcpts[key]++
	return nil
}

func (m *memCoord) Release(ctx context.Context, key string, _ *store.Grant, msgs, rcpts int, _ time.Time, _ store.SharedLimits) error {
	if err := m.enter(ctx, "Release", ""); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.msgs[key] -= msgs
	m.rcpts[key] -= rcpts
	return nil
}

func (m *memCoord) Usage(ctx context.Context, key string, _ time.Time) (int, int, error) {
	if err := m.enter(ctx, "Usage", ""); err != nil {
		return 0, 0, err
	}
	defer m.mu.Unlock()
	return m.msgs[key], m.rcpts[key], nil
}

func (m *memCoord) AcquireSlot(ctx context.Context, key, owner string, size int, now, until time.Time) (int, bool, error) {
	if err := m.enter(ctx, "AcquireSlot", owner); err != nil {
		return 0, false, err
	}
	defer m.mu.Unlock()
	if m.slots[key] == nil {
		m.slots[key] = map[int]memSlot{}
	}
	live := 0
	for _, s := range m.slots[key] {
		if s.until.After(now) {
			live++
		}
	}
	if live >= size { // adopted slots beyond the size count too
		return 0, false, nil
	}
	for i := 0; i < size; i++ {
		if s, ok := m.slots[key][i]; !ok || !s.until.After(now) {
			m.slots[key][i] = memSlot{owner, until}
			if m.loseReplies {
				return 0, false, fmt.Errorf("%w: connection reset after the commit", store.ErrUnavailable)
			}
			return i, true, nil
		}
	}
	return 0, false, nil
}

func (m *memCoord) ReleaseSlot(ctx context.Context, key, owner string, slot int) error {
	if err := m.enter(ctx, "ReleaseSlot", owner); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if s, ok := m.slots[key][slot]; ok && s.owner == owner {
		delete(m.slots[key], slot)
	}
	return nil
}

func (m *memCoord) ExtendSlots(ctx context.Context, owner string, now, until time.Time) ([]string, error) {
	if err := m.enter(ctx, "ExtendSlots", owner); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var contended []string
	for key, slots := range m.slots {
		held := false
		for i, s := range slots {
			if s.owner == owner {
				slots[i] = memSlot{owner, until}
				held = true
			}
		}
		if held && m.waitedForByOthers(key, owner, now) {
			contended = append(contended, key)
		}
	}
	sort.Strings(contended)
	return contended, nil
}

// waitedForByOthers reports a live wait for key of an owner but this one.
func (m *memCoord) waitedForByOthers(key, owner string, now time.Time) bool {
	for o, until := range m.wants[key] {
		if o != owner && until.After(now) {
			return true
		}
	}
	return false
}

func (m *memCoord) WantSlot(ctx context.Context, key, owner string, until time.Time) error {
	if err := m.enter(ctx, "WantSlot", owner); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if m.wants[key] == nil {
		m.wants[key] = map[string]time.Time{}
	}
	if until.After(m.wants[key][owner]) {
		m.wants[key][owner] = until
	}
	return nil
}

func (m *memCoord) SlotsInUse(ctx context.Context, key string, now time.Time) (int, error) {
	if err := m.enter(ctx, "SlotsInUse", ""); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.slots[key] {
		if s.until.After(now) {
			n++
		}
	}
	return n, nil
}

// held counts the slots of key owner holds, live or not.
func (m *memCoord) held(key, owner string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.slots[key] {
		if s.owner == owner {
			n++
		}
	}
	return n
}

func (m *memCoord) ReleaseSlots(ctx context.Context, owner string) error {
	if err := m.enter(ctx, "ReleaseSlots", owner); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for _, slots := range m.slots {
		for i, s := range slots {
			if s.owner == owner {
				delete(slots, i)
			}
		}
	}
	return nil
}

func (m *memCoord) Charge(ctx context.Context, key string, c store.Charge, _ time.Time, _ store.SharedLimits) error {
	if err := m.enter(ctx, "Charge", ""); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for _, n := range c.Counts {
		m.msgs[key] += n.Msgs
		m.rcpts[key] += n.Rcpts
	}
	m.charges = append(m.charges, c)
	return nil
}

// AdoptSlots keeps the owner's lowest n slots and adds free ones beyond
// any size, as the engines do.
func (m *memCoord) AdoptSlots(ctx context.Context, key, owner string, n int, now, until time.Time) ([]int, error) {
	if err := m.enter(ctx, "AdoptSlots", owner); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if m.slots[key] == nil {
		m.slots[key] = map[int]memSlot{}
	}
	var held []int
	for _, i := range slices.Sorted(maps.Keys(m.slots[key])) {
		if m.slots[key][i].owner != owner {
			continue
		}
		if len(held) < n {
			m.slots[key][i] = memSlot{owner, until}
			held = append(held, i)
		} else {
			delete(m.slots[key], i)
		}
	}
	for i := 0; len(held) < n; i++ {
		if s, ok := m.slots[key][i]; !ok || !s.until.After(now) {
			m.slots[key][i] = memSlot{owner, until}
			held = append(held, i)
		}
	}
	slices.Sort(held)
	return held, nil
}

var _ store.Coordinator = (*memCoord)(nil)

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func instance(t *testing.T, c store.Coordinator, owner string, n int, log *logBuf) *Coordination {
	t.Helper()
	set := CoordinationSettings{Owner: owner, Instances: n, RetryAfter: 50 * time.Millisecond}
	if log != nil {
		set.Log = hclog.New(&hclog.LoggerOptions{Output: log})
	}
	return NewCoordination(c, set)
}

// TestSharedLimitsAcrossInstances: two instances on one database admit a
// daily quota once between them, not once each.
func TestSharedLimitsAcrossInstances(t *testing.T) {
	c := newMemCoord()
	a := instance(t, c, "a", 2, nil).NewSharedLimits("box@example.com", 0, 0, 5, 0, 0)
	b := instance(t, c, "b", 2, nil).NewSharedLimits("box@example.com", 0, 0, 5, 0, 0)
	now := time.Now()
	admitted := 0
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if _, err := l.Reserve(now); err == nil {
			admitted++
		} else if le, ok := IsLimit(err); !ok || le.Kind != KindDailyMessages || le.Limit != 5 || le.RetryAt.IsZero() {
			t.Fatalf("refusal = %v", err)
		}
	}
	if admitted != 5 {
		t.Fatalf("admitted %d, want 5 in all", admitted)
	}
	if u := a.Usage(now)[KindDailyMessages]; u != 1 {
		t.Fatalf("usage seen by a = %v, want 1", u)
	}
}

// TestSharedReservationGivesBack: a message that was not sent gives its
// message and recipients back; a dropped recipient gives its own back.
func TestSharedReservationGivesBack(t *testing.T) {
	c := newMemCoord()
	l := instance(t, c, "a", 1, nil).NewSharedLimits("box@example.com", 0, 0, 10, 10, 2)
	now := time.Now()
	r, err := l.Reserve(now)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.AddRcpt(now); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.AddRcpt(now); err == nil {
		t.Fatal("a third recipient passed recipients_per_message = 2")
	}
	r.DropRcpt()
	if c.rcpts["box@example.com"] != 1 {
		t.Fatalf("after DropRcpt: %d recipients counted, want 1", c.rcpts["box@example.com"])
	}
	r.Cancel(now)
	r.Cancel(now) // twice: nothing more
	if c.msgs["box@example.com"] != 0 || c.rcpts["box@example.com"] != 0 {
		t.Fatalf("after Cancel: %d messages, %d recipients counted", c.msgs["box@example.com"], c.rcpts["box@example.com"])
	}
	r2, _ := l.Reserve(now)
	r2.Commit()
	r2.Cancel(now)
	if c.msgs["box@example.com"] != 1 {
		t.Fatal("Cancel after Commit gave the message back")
	}
}

// TestSharedLimitsFallBackToTheInstancesShare: with the database down an
// instance keeps 1/n of each limit, says so once, and shares again when
// the database is back.
func TestSharedLimitsFallBackToTheInstancesShare(t *testing.T) {
	c := newMemCoord()
	log := &logBuf{}
	co := instance(t, c, "a", 3, log)
	l := co.NewSharedLimits("box@example.com", 0, 0, 9, 0, 0)
	c.setDown(true)
	now := time.Now()
	admitted := 0
	for range 10 {
		if _, err := l.Reserve(now); err == nil {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("admitted %d while the database was down, want 9/3 = 3", admitted)
	}
	if d, err := co.Degraded(); !d || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Degraded() = %v, %v", d, err)
	}
	if n := strings.Count(log.String(), "database is unreachable"); n != 1 {
		t.Fatalf("the outage was logged %d times, want once:\n%s", n, log)
	}
	calls := c.calls
	_, _ = l.Reserve(now)
	if c.calls != calls {
		t.Fatal("a failed database was asked again within RetryAfter")
	}
	c.setDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := l.Reserve(now); err == nil && c.msgs["box@example.com"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the database was not used again after it came back")
		}
		time.Sleep(10 * time.Millisecond) // RetryAfter passing
	}
	if d, _ := co.Degraded(); d {
		t.Fatal("still degraded with the database back")
	}
	if !strings.Contains(log.String(), "reachable again") {
		t.Fatalf("recovery not logged:\n%s", log)
	}
}

// TestConnSlotsAcrossInstances: the cap holds across instances; a waiting
// instance makes the holder give its idle connections up; a lease renewed
// by Run survives; a stopped instance frees its slots.
func TestConnSlotsAcrossInstances(t *testing.T) {
	c := newMemCoord()
	a, b := instance(t, c, "a", 2, nil), instance(t, c, "b", 2, nil)
	sa, sb := a.ConnSlots("box@example.com", 3), b.ConnSlots("box@example.com", 3)
	defer sa.Close()
	defer sb.Close()
	var releases []func()
	for range 3 {
		r, err := sa.TryAcquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := sb.TryAcquire(t.Context()); !errors.Is(err, ErrSlotsBusy) {
		t.Fatalf("a 4th slot: %v, want ErrSlotsBusy", err)
	}
	contended := make(chan struct{}, 1)
	sa.OnContended(func() { contended <- struct{}{} })
	a.renew()
	select {
	case <-contended:
	default:
		t.Fatal("the holder was not told that another instance waits")
	}
	releases[0]()
	releases[0]() // once only
	waitFor(t, func() bool { n, _ := c.SlotsInUse(context.Background(), "box@example.com", time.Now()); return n == 2 })
	// b's last poll said "all held": it asks again within busyFor.
	waitFor(t, func() bool { _, err := sb.TryAcquire(t.Context()); return err == nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	cancel()
	<-done
	if n, _ := c.SlotsInUse(context.Background(), "box@example.com", time.Now()); n != 1 {
		t.Fatalf("after a stopped: %d slots held, want b's 1", n)
	}
}

// TestConnSlotsFallBackToTheInstancesShare: with the database down an
// instance opens at most its share of the cap.
func TestConnSlotsFallBackToTheInstancesShare(t *testing.T) {
	c := newMemCoord()
	c.setDown(true)
	s := instance(t, c, "a", 3, nil).ConnSlots("box@example.com", 6)
	defer s.Close()
	r1, err1 := s.TryAcquire(t.Context())
	r2, err2 := s.TryAcquire(t.Context())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := s.TryAcquire(t.Context()); !errors.Is(err, ErrSlotsBusy) {
		t.Fatalf("a 3rd slot of 6/3: %v", err)
	}
	r1()
	r1()
	if _, err := s.TryAcquire(t.Context()); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond) // polling state changed by a goroutine
	}
}

// TestRequestSlotsAskNoHolderForIdleConnections: waiting for a request
// slot records no want (requests end on their own; nobody holds idle
// ones), unlike waiting for a connection slot.
func TestRequestSlotsAskNoHolderForIdleConnections(t *testing.T) {
	c := newMemCoord()
	co := instance(t, c, "a", 1, nil)
	req := co.RequestSlots("api:box@example.com", 1)
	if _, err := req.TryAcquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := req.TryAcquire(t.Context()); !errors.Is(err, ErrSlotsBusy) {
		t.Fatalf("a 2nd request slot of 1: %v", err)
	}
	if _, wanted := c.wants["api:box@example.com"]["a"]; wanted {
		t.Fatal("a request waiter asked holders for idle connections")
	}
	conn := co.ConnSlots("smtp:box@example.com", 1)
	_, _ = conn.TryAcquire(t.Context())
	if _, err := conn.TryAcquire(t.Context()); !errors.Is(err, ErrSlotsBusy) {
		t.Fatal(err)
	}
	if _, wanted := c.wants["smtp:box@example.com"]["a"]; !wanted {
		t.Fatal("a connection waiter did not ask holders for idle connections")
	}
}
