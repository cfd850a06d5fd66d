package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
)

// Defaults of the store and queue blocks (README "store" and "queue").
const (
	DefaultHistoryRetention = 30 * 24 * time.Hour
	DefaultTransitMount     = "transit"
	// DefaultQueueMaxLifetime is Postfix's maximal_queue_lifetime.
	DefaultQueueMaxLifetime  = 5 * 24 * time.Hour
	DefaultQueueWorkers      = 64
	DefaultMaxBouncesPerHour = 100
	// DefaultDelayWarning is when a recipient that asked for delay
	// notices (NOTIFY=DELAY) gets one; Postfix's delay_warning_time is off
	// by default, but such a recipient asked for the warning.
	DefaultDelayWarning = 4 * time.Hour
)

// Bounds of the store and queue settings.
const (
	minHistoryRetention = time.Hour
	minQueueLifetime    = time.Minute
	// maxQueueLifetime: a sender who hears nothing for a month has long
	// stopped waiting for the message.
	maxQueueLifetime = 30 * 24 * time.Hour
	minRetryStep     = time.Second
	maxQueueWorkers  = 1024
)

// DefaultRetrySchedule returns the waits before the retries of a queued
// message when the configuration sets none; the last one repeats.
func DefaultRetrySchedule() []time.Duration {
	return []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}
}

// transitKeyName is the key name pattern of Vault's Transit engine (its
// "keys/<name>" path): word characters, '-' and '.', starting and ending
// with a word character.
var transitKeyName = regexp.MustCompile(`^\w(?:[\w.-]*\w)?$`)

type rawTransit struct {
	Mount *string  `hcl:"mount,optional"`
	Key   *string  `hcl:"key,optional"`
	Body  hcl.Body `hcl:",body"`
}

type rawPostgres struct {
	DSN  *string  `hcl:"dsn,optional"`
	Body hcl.Body `hcl:",body"`
}

type rawStore struct {
	Path             string       `hcl:"path,optional"`
	HistoryRetention string       `hcl:"history_retention,optional"`
	Transit          *rawTransit  `hcl:"transit,block"`
	Postgres         *rawPostgres `hcl:"postgres,block"`
}

// store decodes the store block; vaultDeclared says whether a vault block
// exists, which transit needs.
func (d *decoder) store(b *hcl.Block, vaultDeclared bool) *Store {
	var raw rawStore
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	body, def := b.Body, b.DefRange
	s := &Store{DefRange: def, PathRange: attrRange(body, "path", def)}
	s.HistoryRetention, _ = d.boundedDuration(body, "history_retention", raw.HistoryRetention, def, DefaultHistoryRetention, minHistoryRetention, 0)
	if raw.Postgres != nil {
		d.postgres(raw.Postgres, nestedBlockRanges(body, "postgres")[0])
	}
	switch {
	case !hasAttr(body, "path"):
		if raw.Postgres == nil {
			d.errorf(def, "Missing required argument", "The store block needs path, the directory of the embedded database, such as \"/var/lib/oauthrelay\".")
		}
	case !filepath.IsAbs(raw.Path):
		// Like spool_dir: a relative path would depend on the working
		// directory the relay happens to start in.
		d.errorf(s.PathRange, "Invalid store path", "path must be an absolute path; got %q.", raw.Path)
	default:
		s.Path = filepath.Clean(raw.Path)
		d.hostFiles = append(d.hostFiles, hostFile{kind: storeDirectory, path: s.Path, owner: "store path", rng: s.PathRange})
	}
	if raw.Transit != nil {
		s.Transit = d.transit(raw.Transit, nestedBlockRanges(body, "transit")[0], vaultDeclared)
	}
	return s
}

// postgres checks a postgres block, which this version parses so that its
// absence of support is reported where it is written.
func (d *decoder) postgres(raw *rawPostgres, rng hcl.Range) {
	if raw.DSN == nil {
		d.errorf(rng, "Missing required argument", "The postgres block needs dsn, a secret reference to the connection string.")
	} else {
		d.secret(raw.Body, "dsn", raw.DSN, rng)
	}
	d.errorf(rng, "PostgreSQL store not supported yet", "This version keeps its state in the embedded database only: remove the postgres block and set path.")
}

func (d *decoder) transit(raw *rawTransit, rng hcl.Range, vaultDeclared bool) *Transit {
	t := &Transit{Mount: DefaultTransitMount, DefRange: rng}
	if raw.Mount != nil {
		t.Mount = strings.Trim(*raw.Mount, "/")
		if t.Mount == "" || strings.IndexFunc(t.Mount, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			d.errorf(attrRange(raw.Body, "mount", rng), "Invalid transit mount", "mount must be the path of a Transit secrets engine, such as \"transit\"; got %q.", *raw.Mount)
		}
	}
	switch {
	case raw.Key == nil:
		d.errorf(rng, "Missing required argument", "The transit block needs key, the name of the Transit key that encrypts queued messages.")
	case !transitKeyName.MatchString(*raw.Key):
		d.errorf(attrRange(raw.Body, "key", rng), "Invalid transit key", "key must be a Transit key name (letters, digits, '_', '-' and '.'), such as \"oauthrelay-queue\"; got %q.", *raw.Key)
	default:
		t.Key = *raw.Key
	}
	if !vaultDeclared {
		d.errorf(rng, "Transit without a vault block", "store.transit encrypts queued messages with Vault's Transit engine and needs a vault block that says how to reach and log in to Vault.")
	}
	return t
}

type rawQueue struct {
	MaxLifetime       string         `hcl:"max_lifetime,optional"`
	RetrySchedule     hcl.Expression `hcl:"retry_schedule,optional"`
	Workers           *int           `hcl:"workers,optional"`
	MaxBouncesPerHour *int           `hcl:"max_bounces_per_hour,optional"`
	DelayWarning      string         `hcl:"delay_warning,optional"`
}

// queue decodes the queue block, or returns the defaults when b is nil.
// storeDeclared says whether a store block exists, without which the queue
// settings have no effect.
func (d *decoder) queue(b *hcl.Block, storeDeclared bool) Queue {
	q := Queue{
		MaxLifetime:       DefaultQueueMaxLifetime,
		RetrySchedule:     DefaultRetrySchedule(),
		Workers:           DefaultQueueWorkers,
		MaxBouncesPerHour: DefaultMaxBouncesPerHour,
		DelayWarning:      DefaultDelayWarning,
	}
	if b == nil {
		return q
	}
	q.DefRange = b.DefRange
	if !storeDeclared {
		d.warnf(b.DefRange, "Queue settings without a store block", "Nothing is queued without a store block, so these settings have no effect.")
	}
	var raw rawQueue
	diags := gohcl.DecodeBody(b.Body, nil, &raw)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return q
	}
	body, def := b.Body, b.DefRange
	lifetime, lifetimeOK := d.boundedDuration(body, "max_lifetime", raw.MaxLifetime, def, DefaultQueueMaxLifetime, minQueueLifetime, maxQueueLifetime)
	q.MaxLifetime = lifetime
	q.Workers = d.boundedInt(body, "workers", raw.Workers, def, DefaultQueueWorkers, 1, maxQueueWorkers)
	q.MaxBouncesPerHour = d.boundedInt(body, "max_bounces_per_hour", raw.MaxBouncesPerHour, def, DefaultMaxBouncesPerHour, 1, 0)
	warning, warningOK := d.boundedDuration(body, "delay_warning", raw.DelayWarning, def, DefaultDelayWarning, time.Minute, maxQueueLifetime)
	q.DelayWarning = warning
	if warningOK && lifetimeOK && hasAttr(body, "delay_warning") && warning >= q.MaxLifetime {
		d.warnf(attrRange(body, "delay_warning", def), "Delay warning after max_lifetime", "delay_warning (%s) is not shorter than max_lifetime (%s): a recipient that asked for delay notices bounces before it would get one.", humanDuration(warning), humanDuration(q.MaxLifetime))
	}
	if hasAttr(body, "retry_schedule") {
		steps, exprs := d.retrySchedule(raw.RetrySchedule)
		q.RetrySchedule = steps
		if lifetimeOK && len(steps) > 0 && len(steps) == len(exprs) && steps[0] > q.MaxLifetime {
			d.errorf(exprs[0].Range(), "First retry after max_lifetime", "The first retry (%s) would come after max_lifetime (%s): a deferred message would bounce without ever being retried.", humanDuration(steps[0]), humanDuration(q.MaxLifetime))
		}
	}
	return q
}

// retrySchedule reads the steps of retry_schedule, each a duration of at
// least a second and none shorter than the one before: the last step
// repeats, so a decreasing schedule would mean retrying faster after
// longer failure, which is almost certainly a mistake.
func (d *decoder) retrySchedule(expr hcl.Expression) ([]time.Duration, []hcl.Expression) {
	exprs, diags := hcl.ExprList(expr)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil, nil
	}
	if len(exprs) == 0 {
		d.errorf(expr.Range(), "Empty retry_schedule", "retry_schedule needs at least one step, such as [\"1m\", \"5m\", \"1h\"]; the last step repeats.")
		return nil, nil
	}
	steps := make([]time.Duration, 0, len(exprs))
	var longest time.Duration
	for i, e := range exprs {
		step, ok := d.retryStep(e, i+1)
		if !ok {
			continue
		}
		if step < longest {
			d.errorf(e.Range(), "Decreasing retry_schedule", "Step %d (%s) is shorter than a step before it (%s); each step must be at least as long as the one before, and the last one repeats.", i+1, humanDuration(step), humanDuration(longest))
		}
		longest = max(longest, step)
		steps = append(steps, step)
	}
	return steps, exprs
}

// retryStep reads step n (1-based) of retry_schedule.
func (d *decoder) retryStep(e hcl.Expression, n int) (time.Duration, bool) {
	v, diags := e.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return 0, false
	}
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		d.errorf(e.Range(), "Invalid duration", "Step %d of retry_schedule must be a duration string such as \"5m\".", n)
		return 0, false
	}
	step, err := parseDuration(v.AsString())
	if err != nil {
		d.errorf(e.Range(), "Invalid duration", "retry_schedule step %d: %v", n, err)
		return 0, false
	}
	if step < minRetryStep {
		d.errorf(e.Range(), "Invalid value", "Step %d of retry_schedule must be at least %s; got %q.", n, humanDuration(minRetryStep), v.AsString())
		return 0, false
	}
	return step, true
}

// checkDelivery requires a store block for every listener that queues.
// storeDeclared is the block's presence, not its validity: an invalid
// store block is reported there, once.
func (d *decoder) checkDelivery(ls []*Listener, storeDeclared bool) {
	if storeDeclared {
		return
	}
	for _, l := range ls {
		if l.Delivery == DeliveryQueue {
			d.errorf(attrRange(l.body, "delivery", l.DefRange), "Queue delivery without a store block",
				"Listener %q has delivery = \"queue\", which answers 250 once a message is stored durably: add a store block, such as store { path = \"/var/lib/oauthrelay\" }, or use delivery = \"direct\".", l.Name)
		}
	}
}

// boundedDuration parses an optional duration attribute and checks it lies
// in [lo, hi] (hi 0: no upper bound). ok is false when the attribute is set
// but invalid.
func (d *decoder) boundedDuration(body hcl.Body, name, value string, def hcl.Range, dflt, lo, hi time.Duration) (v time.Duration, ok bool) {
	before := len(d.diags)
	v = d.duration(body, name, value, def, dflt)
	if len(d.diags) > before {
		return dflt, false
	}
	if value == "" {
		return v, true
	}
	switch {
	case v < lo:
		d.errorf(attrRange(body, name, def), "Invalid value", "%s must be at least %s; got %q.", name, humanDuration(lo), value)
	case hi > 0 && v > hi:
		d.errorf(attrRange(body, name, def), "Invalid value", "%s must be at most %s; got %q.", name, humanDuration(hi), value)
	default:
		return v, true
	}
	return dflt, false
}

// boundedInt checks an optional integer attribute lies in [lo, hi] (hi 0:
// no upper bound), returning dflt when it is absent or invalid.
func (d *decoder) boundedInt(body hcl.Body, name string, v *int, def hcl.Range, dflt, lo, hi int) int {
	switch {
	case v == nil:
		return dflt
	case *v < lo:
		d.errorf(attrRange(body, name, def), "Invalid value", "%s must be at least %d; got %d.", name, lo, *v)
	case hi > 0 && *v > hi:
		d.errorf(attrRange(body, name, def), "Invalid value", "%s must be at most %d; got %d.", name, hi, *v)
	default:
		return *v
	}
	return dflt
}

// humanDuration writes a duration the way the configuration does ("30d",
// "1h", "90s") rather than time.Duration's "720h0m0s".
func humanDuration(v time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if v%u.unit == 0 {
			return fmt.Sprintf("%d%s", v/u.unit, u.name)
		}
	}
	return v.String()
}
