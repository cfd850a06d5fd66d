package upstream

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/limits"
)

// PoolSettings bound one account's upstream connections.
type PoolSettings struct {
	// MaxConnections caps open connections, idle or in use (Microsoft
	// refuses a 4th concurrent session per mailbox). 0: no cap.
	MaxConnections int
	// MaxMessagesPerConnection retires a connection after that many
	// messages. 0: no cap.
	MaxMessagesPerConnection int
	// IdleTimeout closes connections unused for that long; MaxAge closes
	// them that long after they were opened.
	IdleTimeout time.Duration
	MaxAge      time.Duration
	// WaitTimeout bounds how long a message waits for a free connection.
	WaitTimeout time.Duration
}

// ErrPoolExhausted is returned when no connection became free within the
// wait timeout.
var ErrPoolExhausted = errors.New("all upstream connections of the account are busy")

// Pool reuses authenticated upstream connections of one account. A
// connection goes back to the pool after a completed transaction (or a
// successful RSET) and is handed to the next message without a new TLS
// handshake or AUTH.
type Pool struct {
	mu      sync.Mutex
	sender  opener
	set     PoolSettings
	idle    []*Conn // most recently used last
	open    int     // idle + in use + being dialled
	waiters []chan struct{}
	closed  bool
	stop    chan struct{}
	// epoch increases with every Flush; connections opened in an earlier
	// epoch are not reused.
	epoch int
	// gate, when set, caps connections across the relay's instances
	// (limits.ConnSlots): a new connection needs one of its slots too.
	gate Gate
}

// Gate caps connections beyond this process: TryAcquire takes a slot for
// a new connection (release frees it when the connection closes) or fails
// with limits.ErrSlotsBusy, or with ctx's error when the caller gave up.
type Gate interface {
	TryAcquire(ctx context.Context) (release func(), err error)
}

// gatePoll is how often a message waiting for a connection asks the gate
// again: slots held by other instances free up without telling this one.
const gatePoll = 100 * time.Millisecond

// NewPool returns a pool that dials with sender.
func NewPool(sender *Sender, set PoolSettings) *Pool {
	p := &Pool{sender: sender, set: set, stop: make(chan struct{})}
	go p.reap()
	return p
}

// opener opens connections: a *Sender (tests open plain ones).
type opener interface {
	Open(ctx context.Context) (*Conn, error)
}

// SetGate makes new connections take a slot of g first (nil: none).
func (p *Pool) SetGate(g Gate) {
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
}

// Gate returns the gate set by SetGate.
func (p *Pool) Gate() Gate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate
}

// DropIdle closes the idle connections (another instance waits for a
// connection slot of the mailbox).
func (p *Pool) DropIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.wakeLocked(len(idle))
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// SetLimits changes the pool's limits (a reload); connections already
// open stay in use.
func (p *Pool) SetLimits(set PoolSettings) {
	p.mu.Lock()
	p.set = set
	p.wakeLocked(len(p.waiters)) // a raised cap may admit waiters
	p.mu.Unlock()
}

// Get returns a pooled connection, or a new one when none is idle and the
// cap allows; otherwise it waits up to WaitTimeout for one to be released.
// reused says whether the connection served an earlier message (and so may
// have gone stale).
func (p *Pool) Get(ctx context.Context) (c *Conn, reused bool, err error) {
	return p.get(ctx, true)
}

// TryGet is Get without waiting: when every connection is in use it fails
// at once with ErrPoolExhausted.
func (p *Pool) TryGet(ctx context.Context) (c *Conn, reused bool, err error) {
	return p.get(ctx, false)
}

func (p *Pool) get(ctx context.Context, wait bool) (c *Conn, reused bool, err error) {
	var deadline <-chan time.Time
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, errors.New("upstream pool closed")
		}
		now := time.Now()
		for len(p.idle) > 0 {
			c := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			if p.usableLocked(c, now) {
				p.mu.Unlock()
				c.inUse()
				return c, true, nil
			}
			p.open--
			go c.Close()
		}
		gated := false
		if p.set.MaxConnections <= 0 || p.open < p.set.MaxConnections {
			p.open++
			c, err := p.dial(ctx)
			if err == nil || !errors.Is(err, limits.ErrSlotsBusy) {
				return c, false, err
			}
			gated = true
			p.mu.Lock()
		}
		if !wait {
			p.mu.Unlock()
			return nil, false, &Error{Stage: StagePool, Err: ErrPoolExhausted}
		}
		w := make(chan struct{}, 1)
		p.waiters = append(p.waiters, w)
		wait := p.set.WaitTimeout
		p.mu.Unlock()
		if deadline == nil {
			if wait <= 0 {
				wait = 30 * time.Second
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		var poll <-chan time.Time
		if gated {
			poll = time.After(gatePoll)
		}
		select {
		case <-w:
		case <-poll:
			p.dropWaiter(w)
		case <-deadline:
			p.dropWaiter(w)
			return nil, false, &Error{Stage: StagePool, Err: ErrPoolExhausted}
		case <-ctx.Done():
			p.dropWaiter(w)
			return nil, false, &Error{Stage: StagePool, Err: ctx.Err()}
		}
	}
}

// dial opens a connection the caller counted in p.open (p.mu held; it
// returns with p.mu released). A connection that gets no slot of the gate
// is not opened: limits.ErrSlotsBusy.
func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	sender, epoch, gate := p.sender, p.epoch, p.gate
	p.mu.Unlock()
	release := func() {}
	var err error
	if gate != nil {
		release, err = gate.TryAcquire(ctx)
	}
	var c *Conn
	if err == nil {
		c, err = sender.Open(ctx)
		if err != nil {
			release()
		}
	}
	if err != nil {
		p.mu.Lock()
		p.open--
		if !errors.Is(err, limits.ErrSlotsBusy) {
			p.wakeLocked(1) // a waiter may dial instead
		}
		p.mu.Unlock()
		return nil, err
	}
	c.epoch, c.slot = epoch, release
	return c, nil
}

func (p *Pool) dropWaiter(w chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return
		}
	}
	// Woken while timing out: pass the wake-up on.
	p.wakeLocked(1)
}

func (p *Pool) wakeLocked(n int) {
	for ; n > 0 && len(p.waiters) > 0; n-- {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w <- struct{}{}
	}
}

func (p *Pool) usableLocked(c *Conn, now time.Time) bool {
	switch {
	case c.broken, c.epoch != p.epoch:
		return false
	case p.set.IdleTimeout > 0 && now.Sub(c.lastUsed) > p.set.IdleTimeout:
		return false
	case p.set.MaxAge > 0 && now.Sub(c.created) > p.set.MaxAge:
		return false
	case p.set.MaxMessagesPerConnection > 0 && c.messages >= p.set.MaxMessagesPerConnection:
		return false
	}
	return true
}

// Put returns a connection after use. A connection whose transaction did
// not complete must have been reset (RSET) first; a broken, expired or
// worn-out one is closed instead of pooled.
func (p *Pool) Put(c *Conn) {
	c.idleNow()
	p.mu.Lock()
	if p.closed || !p.usableLocked(c, time.Now()) {
		p.open--
		p.wakeLocked(1)
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.wakeLocked(1)
	p.mu.Unlock()
}

// Flush closes the idle connections and retires the ones in use when they
// come back: they authenticated with credentials that were just rotated.
func (p *Pool) Flush() {
	p.mu.Lock()
	p.epoch++ // connections in use are not pooled again (usableLocked)
	p.mu.Unlock()
	p.DropIdle()
}

// Discard closes a connection that must not be reused.
func (p *Pool) Discard(c *Conn) {
	p.mu.Lock()
	p.open--
	p.wakeLocked(1)
	p.mu.Unlock()
	c.Close()
}

// Close closes idle connections now and in-use ones when they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if c, ok := p.gate.(interface{ Close() }); ok {
		c.Close() // no longer told of contention
	}
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.wakeLocked(len(p.waiters))
	close(p.stop)
	p.mu.Unlock()
	for _, c := range idle {
		c.Close() // QUIT: providers see a polite goodbye
	}
}

// reap closes idle connections past their idle timeout or age, so that the
// relay does not hold sessions the provider is about to drop.
func (p *Pool) reap() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			var expired []*Conn
			kept := p.idle[:0]
			for _, c := range p.idle {
				if p.usableLocked(c, now) {
					kept = append(kept, c)
				} else {
					expired = append(expired, c)
				}
			}
			p.idle = kept
			p.open -= len(expired)
			p.wakeLocked(len(expired))
			p.mu.Unlock()
			for _, c := range expired {
				c.Close()
			}
		}
	}
}
