package config

import (
	"errors"
	"fmt"
	"net/url"
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
	// DefaultQueueLease is how long an instance's claim on a message lasts
	// (renewed every third of it while the delivery runs); a dead
	// instance's messages wait that long before another takes them.
	DefaultQueueLease = 5 * time.Minute
	// DefaultSharedQueueLease is the lease on a shared database, where
	// the others take over from a dead instance.
	DefaultSharedQueueLease = time.Minute
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
	minQueueLease    = 3 * time.Second
	maxQueueLease    = time.Hour
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
	DSN               *string  `hcl:"dsn,optional"`
	VaultCredentials  *string  `hcl:"vault_credentials,optional"`
	Role              *string  `hcl:"role,optional"`
	ExpectedInstances *int     `hcl:"expected_instances,optional"`
	MaxConnections    *int     `hcl:"max_connections,optional"`
	Body              hcl.Body `hcl:",body"`
}

type rawStore struct {
	Path             string       `hcl:"path,optional"`
	HistoryRetention string       `hcl:"history_retention,optional"`
	HistorySubjects  bool         `hcl:"history_subjects,optional"`
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
	s := &Store{DefRange: def, PathRange: attrRange(body, "path", def), HistorySubjects: raw.HistorySubjects}
	s.HistoryRetention, _ = d.boundedDuration(body, "history_retention", raw.HistoryRetention, def, DefaultHistoryRetention, minHistoryRetention, 0)
	if raw.Postgres != nil {
		s.Postgres = d.postgres(raw.Postgres, nestedBlockRanges(body, "postgres")[0], vaultDeclared)
	}
	switch {
	case !hasAttr(body, "path"):
		if raw.Postgres == nil {
			d.errorf(def, "Missing required argument", "The store block needs path, the directory of the embedded database, such as \"/var/lib/oauthrelay\", or a postgres block.")
		}
	case raw.Postgres != nil:
		d.errorf(s.PathRange, "Conflicting store settings", "path (the embedded database of one instance) and the postgres block (a database several instances share) exclude each other: keep one.")
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

// Defaults and bounds of the postgres block.
const (
	DefaultPostgresMaxConnections = 10
	maxPostgresConnections        = 1000
	maxExpectedInstances          = 1000
)

// vaultCredentialsPath is a Vault path of a database secrets engine's
// credentials endpoint: "<mount>/creds/<role>".
var vaultCredentialsPath = regexp.MustCompile(`^[\w.-]+(?:/[\w.-]+)*/creds/[\w.-]+$`)

// sqlIdentifier is a role name the relay can put into SET ROLE unquoted
// or quoted without surprises.
var sqlIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$-]{0,62}$`)

func (d *decoder) postgres(raw *rawPostgres, rng hcl.Range, vaultDeclared bool) *Postgres {
	pg := &Postgres{DefRange: rng, ExpectedInstances: 1, MaxConnections: DefaultPostgresMaxConnections}
	if raw.DSN == nil {
		d.errorf(rng, "Missing required argument", "The postgres block needs dsn, the connection string or a secret reference to it, such as \"vault://secret/oauthrelay/db#dsn\".")
	} else {
		pg.DSN = d.dsn(raw.Body, *raw.DSN, rng)
	}
	if raw.VaultCredentials != nil {
		pg.VaultCredentials = strings.Trim(*raw.VaultCredentials, "/")
		r := attrRange(raw.Body, "vault_credentials", rng)
		switch {
		case !vaultCredentialsPath.MatchString(pg.VaultCredentials):
			d.errorf(r, "Invalid vault_credentials", "vault_credentials must be the path of a Vault database secrets engine's credentials, \"<mount>/creds/<role>\", such as \"database/creds/oauthrelay\"; got %q.", *raw.VaultCredentials)
		case !vaultDeclared:
			d.errorf(r, "Vault credentials without a vault block", "vault_credentials needs a vault block that says how to reach and log in to Vault.")
		}
	}
	if raw.Role != nil {
		pg.Role = *raw.Role
		if !sqlIdentifier.MatchString(pg.Role) {
			d.errorf(attrRange(raw.Body, "role", rng), "Invalid role", "role must be a PostgreSQL role name (letters, digits, '_', '$' and '-', not starting with a digit, at most 63); got %q.", pg.Role)
		}
	}
	if raw.ExpectedInstances != nil {
		pg.ExpectedInstances = *raw.ExpectedInstances
		if pg.ExpectedInstances < 1 || pg.ExpectedInstances > maxExpectedInstances {
			d.errorf(attrRange(raw.Body, "expected_instances", rng), "Invalid expected_instances", "expected_instances must be between 1 and %d; got %d.", maxExpectedInstances, pg.ExpectedInstances)
		}
	} else {
		d.warnf(rng, "expected_instances not set", "While the database is unreachable each instance keeps 1/expected_instances of every account limit; without it each keeps the whole limit, and N instances together may send N times as much. Set it to the number of instances you run.")
	}
	if raw.MaxConnections != nil {
		pg.MaxConnections = *raw.MaxConnections
		if pg.MaxConnections < 2 || pg.MaxConnections > maxPostgresConnections {
			d.errorf(attrRange(raw.Body, "max_connections", rng), "Invalid max_connections", "max_connections must be between 2 and %d; got %d.", maxPostgresConnections, pg.MaxConnections)
		}
	}
	return pg
}

// dsn reads the connection string: a secret reference, or the URL itself
// (postgres://…), which names no secret unless it holds a password.
func (d *decoder) dsn(body hcl.Body, value string, def hcl.Range) SecretRef {
	lower := strings.ToLower(value)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		return d.secret(body, "dsn", &value, def)
	}
	rng := attrRange(body, "dsn", def)
	if u, err := url.Parse(value); err != nil {
		d.errorf(rng, "Invalid dsn", "dsn is not a valid connection URL: %v.", redactedURLError(err))
	} else if _, has := u.User.Password(); has || u.Query().Has("password") {
		d.warnf(rng, "Password in the configuration", "The dsn holds a password, which would then sit in the configuration files (and git). Keep the connection string in a secret reference (vault://, file:// or env://), or let Vault issue the user with vault_credentials.")
	}
	return SecretRef{Scheme: SecretLiteral, literal: value, Range: rng}
}

// redactedURLError is a URL parse error without the URL, which may hold a
// password.
func redactedURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
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
	Lease             string         `hcl:"lease,optional"`
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
	if hasAttr(body, "lease") {
		q.Lease, _ = d.boundedDuration(body, "lease", raw.Lease, def, DefaultQueueLease, minQueueLease, maxQueueLease)
	}
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
