package seal

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	lru "github.com/hashicorp/golang-lru/v2"
	vault "github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"
)

// Defaults of TransitOptions.
const (
	DefaultRotate    = time.Minute
	DefaultMaxUses   = 100_000
	DefaultCacheSize = 1024
)

// retryAfterFailure is how long the current data key serves on, past its
// rotation period, after Transit failed to make a new one.
const retryAfterFailure = 5 * time.Second

// callTimeout bounds one shared Transit request: it runs apart from the
// context of the caller who started it, since other callers wait for it.
const callTimeout = 30 * time.Second

// TransitOptions tune a Transit sealer; zero values take the defaults.
type TransitOptions struct {
	// Rotate is how long one data key is handed out before Transit is
	// asked for a new one (default 1 minute).
	Rotate time.Duration
	// MaxUses is how many DataKey calls one data key serves at most
	// (default 100,000).
	MaxUses int
	// CacheSize is how many unwrapped keys are kept in memory, least
	// recently used first out (default 1024).
	CacheSize int
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Log receives a warning when Transit fails and the current data key
	// serves on (default: discarded).
	Log hclog.Logger
}

// Transit is a store.Sealer backed by Vault's Transit secrets engine:
// data keys come from `POST {mount}/datakey/plaintext/{key}` and are
// unwrapped with `POST {mount}/decrypt/{key}`. The wrapped form of a key is
// Transit's ciphertext ("vault:v1:…"), so only Vault can unwrap it and a
// copy of the store alone reveals no body.
//
// DataKey is called once per store commit batch — hundreds of times a
// second under load — so one data key is reused for a rotation period
// and a number of uses, and concurrent callers share one request when it
// runs out. Unwrapped keys are cached, so reading bodies does not ask
// Vault each time. Safe for concurrent use.
type Transit struct {
	client  func() *vault.Client
	names   names
	rotate  time.Duration
	maxUses int
	now     func() time.Time
	log     hclog.Logger

	unwrapped *lru.Cache[string, []byte] // Transit ciphertext → data key
	flights   singleflight.Group

	mu       sync.Mutex
	current  *dataKey
	retryAt  time.Time // after a failed renewal: when to ask Transit again
	renewing bool      // a request for a new data key is under way
}

// dataKey is a data key being handed out.
type dataKey struct {
	key, wrapped []byte
	created      time.Time
	uses         int
}

// NewTransit returns a sealer using the Transit key keyName at mount.
// client returns the currently logged-in Vault client; it is called for
// every request, so a client or token replaced by a new login is used
// from then on.
func NewTransit(client func() *vault.Client, mount, keyName string, opts TransitOptions) *Transit {
	if opts.Rotate <= 0 {
		opts.Rotate = DefaultRotate
	}
	if opts.MaxUses <= 0 {
		opts.MaxUses = DefaultMaxUses
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	cache, _ := lru.New[string, []byte](opts.CacheSize) // fails only for a size <= 0
	return &Transit{
		client:    client,
		names:     newNames(mount, keyName),
		rotate:    opts.Rotate,
		maxUses:   opts.MaxUses,
		now:       opts.Now,
		log:       opts.Log,
		unwrapped: cache,
	}
}

// DataKey returns the current data key (KeySize bytes) and its Transit
// ciphertext, asking Transit for a new one when the current one is older
// than the rotation period or has served its maximum number of uses.
//
// When Transit cannot be reached or is unavailable (sealed, restarting),
// the current key, if it has uses left, serves on and Transit is asked
// again every retryAfterFailure: the queue keeps taking mail through a
// Vault outage, as relaying does with its cached secrets. Refusals (a
// revoked policy, a deleted key) end the key's service at once.
func (t *Transit) DataKey(ctx context.Context) (key, wrapped []byte, err error) {
	for {
		dk := t.usable()
		if dk == nil {
			if dk, err = t.next(ctx); err != nil {
				return nil, nil, t.names.wrap(stepDataKey, err)
			}
		}
		// A key just fetched is used whatever its age (a tiny rotation
		// period could otherwise starve callers); only its uses count.
		if key, wrapped, ok := t.use(dk); ok {
			return key, wrapped, nil
		}
		// Used up by concurrent callers: the next one.
	}
}

// usable returns the current key while it may be handed out: it has uses
// left and is younger than the rotation period, or Transit failed and is
// not to be asked again yet.
func (t *Transit) usable() *dataKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	dk := t.current
	if dk == nil || dk.uses >= t.maxUses {
		return nil
	}
	now := t.now()
	if now.Sub(dk.created) < t.rotate || now.Before(t.retryAt) {
		return dk
	}
	return nil
}

// use counts one use of dk and returns copies of its key and wrapped form.
func (t *Transit) use(dk *dataKey) (key, wrapped []byte, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if dk.uses >= t.maxUses {
		return nil, nil, false
	}
	dk.uses++
	return clone(dk.key), clone(dk.wrapped), true
}

// renewWait bounds how long a caller waits for Transit while the current
// key could still serve: a Vault that hangs instead of refusing must not
// stall the store's writer (and every queue operation behind it) for the
// whole request timeout.
const renewWait = 2 * time.Second

// next returns a new data key from Transit. While the current key has
// uses left, a caller waits at most renewWait and then (or at once, when
// a renewal is already under way) serves on with the current key, as in an
// outage; the renewal goes on in the background.
func (t *Transit) next(ctx context.Context) (*dataKey, error) {
	t.mu.Lock()
	fb := t.current
	if fb != nil && fb.uses >= t.maxUses {
		fb = nil
	}
	busy := t.renewing
	t.mu.Unlock()
	if fb == nil {
		return shared(ctx, &t.flights, "datakey", t.renew)
	}
	if busy {
		return fb, nil
	}
	wctx, cancel := context.WithTimeout(ctx, renewWait)
	defer cancel()
	dk, err := shared(wctx, &t.flights, "datakey", t.renew)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		t.log.Warn("Transit is slow to make a new data key; the current one serves on meanwhile",
			"mount", t.names.mount, "key", t.names.key, "waited", renewWait)
		return fb, nil
	}
	return dk, err
}

// renew makes a new current data key, unless a caller that started just
// before made one already.
func (t *Transit) renew(ctx context.Context) (*dataKey, error) {
	if dk := t.usable(); dk != nil {
		return dk, nil
	}
	t.mu.Lock()
	t.renewing = true
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.renewing = false
		t.mu.Unlock()
	}()
	key, wrapped, err := requestDataKey(ctx, t.client(), t.names)
	if err != nil {
		return t.fallback(err)
	}
	// The data key is not put into the unwrap cache: a policy that lacks
	// decrypt must show at the first read of a body, not after a restart
	// with a full queue.
	dk := &dataKey{key: key, wrapped: wrapped, created: t.now()}
	t.mu.Lock()
	t.current, t.retryAt = dk, time.Time{}
	t.mu.Unlock()
	return dk, nil
}

// fallback keeps the current key in service for retryAfterFailure when
// Transit failed without refusing (see DataKey).
func (t *Transit) fallback(err error) (*dataKey, error) {
	if refused(err) {
		return nil, err
	}
	t.mu.Lock()
	dk := t.current
	if dk == nil || dk.uses >= t.maxUses {
		t.mu.Unlock()
		return nil, err
	}
	t.retryAt = t.now().Add(retryAfterFailure)
	t.mu.Unlock()
	t.log.Warn("Transit cannot make a new data key; the current one serves on until it can",
		"mount", t.names.mount, "key", t.names.key, "error", err, "retry_in", retryAfterFailure)
	return dk, nil
}

// refused reports whether Vault answered and refused the request (4xx but
// 429, its rate limit), as opposed to being unreachable or unavailable.
func refused(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != http.StatusTooManyRequests
}

// Unwrap returns the data key of a Transit ciphertext made by DataKey
// (here or in another process using the same Transit key), from the cache
// when it was unwrapped before. Concurrent calls for the same key share
// one request.
func (t *Transit) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	ct := string(wrapped)
	if !isTransitCiphertext(ct) {
		return nil, t.names.fail(stepDecrypt, errNotTransit)
	}
	if key, ok := t.unwrapped.Get(ct); ok {
		return clone(key), nil
	}
	key, err := shared(ctx, &t.flights, "decrypt\x00"+ct, func(ctx context.Context) ([]byte, error) {
		if key, ok := t.unwrapped.Get(ct); ok {
			return key, nil // unwrapped by a caller that finished just before
		}
		key, err := requestDecrypt(ctx, t.client(), t.names, ct)
		if err != nil {
			return nil, err
		}
		t.unwrapped.Add(ct, key)
		return key, nil
	})
	if err != nil {
		return nil, t.names.wrap(stepDecrypt, err)
	}
	return clone(key), nil
}

// shared runs fn once for all callers asking for the same name at the
// same time. The request does not end with the context of the caller who
// started it, since the others wait for it too (callTimeout bounds it);
// each caller stops waiting when its own context ends.
func shared[T any](ctx context.Context, g *singleflight.Group, name string, fn func(context.Context) (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		// A caller that has given up starts nothing: the select below
		// would otherwise pick at random between its end and a request
		// that finished at once.
		var zero T
		return zero, err
	}
	ch := g.DoChan(name, func() (any, error) {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		return fn(callCtx)
	})
	select {
	case r := <-ch:
		v, _ := r.Val.(T)
		return v, r.Err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
