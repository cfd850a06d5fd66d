package limits

import (
	"errors"
	"sync"
	"time"
)

// ErrCircuitOpen is returned while a circuit is open (or half-open and
// already probing).
var ErrCircuitOpen = errors.New("circuit open")

// Outcome is what one attempt tells a circuit.
type Outcome int

const (
	// Success: the provider did its part (accepted the message).
	Success Outcome = iota + 1
	// Failure: the guarded party itself failed (for a provider: connection,
	// TLS, greeting, a lost or closed connection; for an account: any of
	// those, or its credentials).
	Failure
	// MemberFailure: one member (a mailbox of the provider) was turned
	// away for now, such as a mailbox's throttling. It opens an account's
	// circuit like a Failure, but a provider's only when most of its
	// recently active mailboxes fail (see CircuitSettings).
	MemberFailure
)

// Circuit states, as reported in /health/ready and metrics.
const (
	StateClosed   = "closed"
	StateHalfOpen = "half-open"
	StateOpen     = "open"
)

// CircuitSettings configure a Circuit. With ConsecutiveFailures > 0 the
// circuit opens after that many failures in a row (an account). Otherwise
// it opens on a failure ratio over a rolling Window once MinRequests
// outcomes were seen: when FailureRatio of the outcomes were the guarded
// party's own failures, or when at least two members and FailureRatio of
// the members active in the window last failed (a provider).
type CircuitSettings struct {
	Name                string
	OpenTimeout         time.Duration
	ConsecutiveFailures int
	Window              time.Duration
	MinRequests         int
	FailureRatio        float64
	// OnChange is told about every state change.
	OnChange func(name, from, to string)
}

// probeTimeout frees the half-open probe slot of an attempt that never
// reported back, so one stuck client cannot hold the circuit half-open.
const probeTimeout = time.Minute

const windowBuckets = 10

// Circuit is a circuit breaker: while open it refuses work at once; after
// OpenTimeout it lets one probe at a time through (half-open), and the
// probe's success closes it again. Admission (Allow) and outcomes (Record)
// are separate, so that an attempt can report several outcomes (the start
// of a transaction, then its end) and never holds the probe slot longer
// than its first step.
type Circuit struct {
	s CircuitSettings

	mu          sync.Mutex
	state       string
	openedUntil time.Time
	probeUntil  time.Time // a probe is under way until then
	consecutive int
	buckets     [windowBuckets]bucket
	members     map[string]memberState
}

type bucket struct {
	idx                int64
	requests, failures int
}

type memberState struct {
	at     time.Time
	failed bool
}

// NewCircuit returns a closed circuit.
func NewCircuit(s CircuitSettings) *Circuit {
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = 30 * time.Second
	}
	if s.ConsecutiveFailures <= 0 {
		if s.Window <= 0 {
			s.Window = time.Minute
		}
		if s.MinRequests <= 0 {
			s.MinRequests = 1
		}
		if s.FailureRatio <= 0 || s.FailureRatio > 1 {
			s.FailureRatio = 0.5
		}
	}
	return &Circuit{s: s, state: StateClosed, members: map[string]memberState{}}
}

// Allow admits an attempt. It fails with ErrCircuitOpen while the circuit
// is open, or half-open with a probe under way. release frees the probe
// slot (call it once the attempt's first step is done; it is safe to call
// when there is no slot).
func (c *Circuit) Allow(now time.Time) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(now)
	switch c.state {
	case StateOpen:
		return nil, ErrCircuitOpen
	case StateHalfOpen:
		if now.Before(c.probeUntil) {
			return nil, ErrCircuitOpen
		}
		until := now.Add(probeTimeout)
		c.probeUntil = until
		return func() {
			c.mu.Lock()
			if c.probeUntil.Equal(until) {
				c.probeUntil = time.Time{}
			}
			c.mu.Unlock()
		}, nil
	}
	return func() {}, nil
}

// Record reports an outcome; member names the mailbox it concerns (used by
// ratio circuits).
func (c *Circuit) Record(now time.Time, member string, o Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(now)
	switch c.state {
	case StateOpen:
		return
	case StateHalfOpen:
		c.probeUntil = time.Time{}
		if o == Success {
			c.resetLocked()
			c.setLocked(StateClosed)
		} else {
			c.tripLocked(now)
		}
		return
	}
	if c.s.ConsecutiveFailures > 0 {
		if o == Success {
			c.consecutive = 0
			return
		}
		if c.consecutive++; c.consecutive >= c.s.ConsecutiveFailures {
			c.tripLocked(now)
		}
		return
	}
	b := c.bucketLocked(now)
	b.requests++
	if o == Failure {
		b.failures++
	}
	if member != "" {
		c.members[member] = memberState{at: now, failed: o != Success}
	}
	if c.shouldTripLocked(now) {
		c.tripLocked(now)
	}
}

func (c *Circuit) bucketLocked(now time.Time) *bucket {
	span := c.s.Window / windowBuckets
	idx := now.UnixNano() / int64(span)
	b := &c.buckets[idx%windowBuckets]
	if b.idx != idx {
		*b = bucket{idx: idx}
	}
	return b
}

func (c *Circuit) shouldTripLocked(now time.Time) bool {
	span := c.s.Window / windowBuckets
	idx := now.UnixNano() / int64(span)
	requests, failures := 0, 0
	for _, b := range c.buckets {
		if idx-b.idx < windowBuckets {
			requests += b.requests
			failures += b.failures
		}
	}
	if requests < c.s.MinRequests {
		return false
	}
	if float64(failures) >= c.s.FailureRatio*float64(requests) {
		return true
	}
	active, failing := 0, 0
	for m, st := range c.members {
		if now.Sub(st.at) > c.s.Window {
			delete(c.members, m)
			continue
		}
		active++
		if st.failed {
			failing++
		}
	}
	return failing >= 2 && float64(failing) >= c.s.FailureRatio*float64(active)
}

func (c *Circuit) tripLocked(now time.Time) {
	c.resetLocked()
	c.openedUntil = now.Add(c.s.OpenTimeout)
	c.setLocked(StateOpen)
}

func (c *Circuit) resetLocked() {
	c.consecutive = 0
	c.buckets = [windowBuckets]bucket{}
	clear(c.members)
	c.probeUntil = time.Time{}
}

// advanceLocked turns an open circuit half-open once its timeout passed.
func (c *Circuit) advanceLocked(now time.Time) {
	if c.state == StateOpen && !now.Before(c.openedUntil) {
		c.setLocked(StateHalfOpen)
	}
}

func (c *Circuit) setLocked(to string) {
	if c.state == to {
		return
	}
	from := c.state
	c.state = to
	if c.s.OnChange != nil {
		// Called with the lock held: it must only log.
		c.s.OnChange(c.s.Name, from, to)
	}
}

// State is "closed", "half-open" or "open".
func (c *Circuit) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(time.Now())
	return c.state
}

// StateValue is the state as a number for metrics: 0 closed, 1 half-open,
// 2 open.
func (c *Circuit) StateValue() float64 {
	switch c.State() {
	case StateHalfOpen:
		return 1
	case StateOpen:
		return 2
	}
	return 0
}

// RetryAt is when the circuit may admit an attempt again: the end of its
// open period; soon when a half-open probe is under way (the probe holds
// its slot for one step only, and its result decides); now when it admits
// at once.
func (c *Circuit) RetryAt(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(now)
	switch {
	case c.state == StateOpen:
		return c.openedUntil
	case c.state == StateHalfOpen && now.Before(c.probeUntil):
		return minTime(c.probeUntil, now.Add(probeRecheck))
	}
	return now
}

// probeRecheck is how soon a refused caller may look again while a
// half-open probe is under way.
const probeRecheck = time.Second

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// AllowAll asks each circuit in turn for leave to go ahead (nil ones are
// skipped), as a transport does before contacting a provider: the
// provider's circuit, then the account's. When one refuses, the slots
// already taken are given back and refused names it; otherwise release
// gives every slot back once the step is over.
func AllowAll(now time.Time, circuits ...*Circuit) (release func(), refused *Circuit, err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	for _, c := range circuits {
		if c == nil {
			continue
		}
		r, err := c.Allow(now)
		if err != nil {
			release()
			return nil, c, err
		}
		releases = append(releases, r)
	}
	return release, nil, nil
}

// MemberName is the member a mailbox counts as in a provider's circuit:
// member when set (the mailboxes of a domain-wide account share one),
// else the mailbox itself.
func MemberName(member, mailbox string) string {
	if member != "" {
		return member
	}
	return mailbox
}
