package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Action is an operator command on queued messages, Postfix's postsuper
// and postqueue -i (README "The queue commands").
type Action string

// The actions.
const (
	ActRetry   Action = "retry"   // attempt now (a held message: release it first)
	ActHold    Action = "hold"    // no attempts until released
	ActRelease Action = "release" // attempts resume on the message's schedule
	ActDelete  Action = "delete"  // remove without a bounce (history kept)
)

// actionScope is what each action selects when applied to every message
// it applies to (`-all`).
var actionScope = map[Action]store.Filter{
	ActRetry:   {State: store.StateQueued}, // held messages wait for release
	ActHold:    {State: store.StateQueued},
	ActRelease: {State: store.StateHeld},
	ActDelete:  {},
}

// ParseAction returns the action named s.
func ParseAction(s string) (Action, bool) {
	_, ok := actionScope[Action(s)]
	return Action(s), ok
}

// The outcomes of an action on one message (Result.Result).
const (
	Done      = "done"
	Unchanged = "unchanged"
	Failed    = "failed"
)

// Causes of a result that is not Done (Result.Cause; test with errors.Is).
var (
	// ErrNoMessage: the ID is neither queued nor in the history.
	ErrNoMessage = errors.New("no such message in the queue or its history")
	// ErrNotQueued: the message is in the history only (final).
	ErrNotQueued = errors.New("not in the queue any more")
	// ErrNotApplicable: the message's state makes the action moot or
	// wrong (release of a message not held, retry of a held one).
	ErrNotApplicable = errors.New("the action does not apply to the message's state")
)

// Result is what an action did to one message; its JSON is that of
// `oauthrelay queue ACTION -json`.
type Result struct {
	ID     string `json:"id"`
	Result string `json:"result"` // Done, Unchanged or Failed
	Detail string `json:"detail"`
	// Cause is why the action was not done: ErrNoMessage, ErrNotQueued,
	// ErrNotApplicable or the store's error; nil when done.
	Cause error `json:"-"`
}

// NormalizeID accepts an ID as mailq shows it: queue IDs are upper-case
// Crockford base32, and a copied "!" (held) marker is dropped.
func NormalizeID(id string) string {
	return strings.ToUpper(strings.TrimRight(strings.TrimSpace(id), "!*"))
}

// ListPage is how many messages Each reads at a time: a long queue is
// walked page by page, never held in memory whole.
const ListPage = 500

// Ops are the queue operations that `oauthrelay queue` and the console
// share.
type Ops struct {
	Store QueueStore
	Now   func() time.Time // nil: time.Now
	// Loc is the time zone of the times in details (nil: local time; the
	// console uses UTC).
	Loc *time.Location
}

func (o Ops) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Each calls fn for every message f selects, a page at a time, in ID
// (arrival) order.
func (o Ops) Each(ctx context.Context, f store.Filter, fn func(*store.Envelope) error) error {
	f.Limit = ListPage
	for {
		page, err := o.Store.List(ctx, f)
		if err != nil {
			return err
		}
		for _, m := range page {
			if err := fn(m); err != nil {
				return err
			}
		}
		if len(page) < ListPage {
			return nil
		}
		f.After = page[len(page)-1].ID
	}
}

// Message is what the store knows of one message: its envelope while it
// is queued, its history record and its trail (oldest first).
type Message struct {
	ID       string
	Envelope *store.Envelope
	Record   *store.Record
	Events   []*store.Event
}

// Show finds a message in the queue or in its history; never its body.
// The error wraps ErrNoMessage when neither knows it.
func (o Ops) Show(ctx context.Context, id string) (*Message, error) {
	env, err := o.Store.Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	rec, events, err := o.Store.History(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if env == nil && rec == nil {
		return nil, fmt.Errorf("%s: %w", id, ErrNoMessage)
	}
	return &Message{ID: id, Envelope: env, Record: rec, Events: events}, nil
}

// Act applies a to the messages ids or, with all, to every message it
// applies to (then a message that left the queue in the meantime is
// Unchanged, not Failed). The error is the store's, when it could not
// list the queue.
func (o Ops) Act(ctx context.Context, a Action, ids []string, all bool) ([]Result, error) {
	if all {
		err := o.Each(ctx, actionScope[a], func(m *store.Envelope) error {
			ids = append(ids, m.ID)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	now := o.now()
	results := make([]Result, 0, len(ids))
	for _, id := range ids {
		results = append(results, o.actOne(ctx, a, id, all, now))
	}
	return results, nil
}

func (o Ops) actOne(ctx context.Context, a Action, id string, all bool, now time.Time) Result {
	env, err := o.Store.Get(ctx, id)
	if err == nil {
		if r, settled := precheck(a, env); settled {
			return r
		}
		err = o.apply(ctx, a, id, now)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		r := o.notQueued(ctx, id)
		if all {
			r.Result = Unchanged
		}
		return r
	case err != nil:
		return Result{ID: id, Result: Failed, Detail: err.Error(), Cause: err}
	}
	return Result{ID: id, Result: Done, Detail: o.doneDetail(a, env, now)}
}

// precheck settles an action its message's state makes moot or wrong.
func precheck(a Action, env *store.Envelope) (Result, bool) {
	held := env.State == store.StateHeld
	r := Result{ID: env.ID, Result: Unchanged, Cause: ErrNotApplicable}
	switch {
	case a == ActHold && held:
		r.Detail = "already held"
	case a == ActRelease && !held:
		r.Detail = "not held"
	case a == ActRetry && held:
		r.Result, r.Detail = Failed, "held: release it first (oauthrelay queue release "+env.ID+")"
	default:
		return Result{}, false
	}
	return r, true
}

func (o Ops) apply(ctx context.Context, a Action, id string, now time.Time) error {
	switch a {
	case ActRetry:
		return o.Store.Retry(ctx, id, now)
	case ActHold:
		return o.Store.Hold(ctx, id)
	case ActRelease:
		return o.Store.Release(ctx, id)
	case ActDelete:
		return o.Store.Delete(ctx, id)
	}
	return fmt.Errorf("unknown command %q", a)
}

func (o Ops) doneDetail(a Action, env *store.Envelope, now time.Time) string {
	switch a {
	case ActRetry:
		return "due now: the relay attempts it within a few seconds"
	case ActHold:
		return "held: no attempts until released"
	case ActRelease:
		if env.NextAttempt.After(now) {
			return fmt.Sprintf("released: next attempt %s; to attempt it now: oauthrelay queue retry %s", When(env.NextAttempt, now, o.Loc), env.ID)
		}
		return "released: due now"
	}
	return "deleted without a bounce (its history is kept)"
}

// notQueued explains why id is not in the queue.
func (o Ops) notQueued(ctx context.Context, id string) Result {
	rec, _, err := o.Store.History(ctx, id)
	if err != nil || rec == nil {
		return Result{ID: id, Result: Failed, Detail: ErrNoMessage.Error(), Cause: ErrNoMessage}
	}
	detail := fmt.Sprintf("%s: %s (%s mode), %s", ErrNotQueued, rec.State, rec.Mode, Stamp(rec.Updated, o.Loc))
	return Result{ID: id, Result: Failed, Detail: detail, Cause: ErrNotQueued}
}

// LifetimeView shows each message's expiry under the max_lifetime of the
// configuration, which the relay applies to every queued message, rather
// than the one in force when the message arrived (the stored Expires).
type LifetimeView struct {
	QueueStore
	MaxLifetime time.Duration
}

func (v LifetimeView) Get(ctx context.Context, id string) (*store.Envelope, error) {
	e, err := v.QueueStore.Get(ctx, id)
	if err == nil {
		e.Expires = e.Received.Add(v.MaxLifetime)
	}
	return e, err
}

func (v LifetimeView) List(ctx context.Context, f store.Filter) ([]*store.Envelope, error) {
	list, err := v.QueueStore.List(ctx, f)
	for _, e := range list {
		e.Expires = e.Received.Add(v.MaxLifetime)
	}
	return list, err
}
