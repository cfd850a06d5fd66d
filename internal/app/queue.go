package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/postgres"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
)

// queueUsage documents `oauthrelay queue`, the relay's mailq and postsuper
// (README "Queue mode").
const queueUsage = `Usage:
  oauthrelay queue list    -config PATH [-json] [-state queued|held] [-account ADDRESS]
  oauthrelay queue show    -config PATH [-json] ID
  oauthrelay queue retry   -config PATH [-json] (ID... | -all)   attempt now (a held message: release it first)
  oauthrelay queue hold    -config PATH [-json] (ID... | -all)   no attempts until released
  oauthrelay queue release -config PATH [-json] (ID... | -all)   attempts resume on the message's schedule
  oauthrelay queue delete  -config PATH [-json] (ID... | -all)   remove without a bounce (history kept)

The commands work while the relay runs: they open the same store. Flags may
come before or after the IDs. In the list, "!" after an ID marks a held
message. Exit status: 0 done, 1 a message or the store failed, 2 usage.
`

// queueCmd is one parsed `oauthrelay queue` command line.
type queueCmd struct {
	verb           string
	path           string
	asJSON, all    bool
	state, account string
	ids            []string
}

// queueVerbs are the commands that act on messages, with what -all
// selects for each.
var queueVerbs = map[string]store.Filter{
	"retry":   {State: store.StateQueued}, // held messages wait for release
	"hold":    {State: store.StateQueued},
	"release": {State: store.StateHeld},
	"delete":  {},
}

func cmdQueue(ctx context.Context, args []string, stdio IO) int {
	c, code := parseQueue(args, stdio)
	if c == nil {
		return code
	}
	cfg := loadConfig(c.path, config.Overrides{ClientsOptional: true}, stdio)
	if cfg == nil {
		return 1
	}
	if cfg.Store == nil {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue: %s has no store block, so there is no queue (listeners deliver directly)\n", c.path)
		return 1
	}
	var st store.Store
	var err error
	if cfg.Store.Postgres != nil {
		var closeShared func()
		st, closeShared, err = openSharedQueueStore(ctx, cfg)
		if err == nil {
			defer closeShared()
		}
	} else {
		var lite *sqlite.Store
		if lite, err = openQueueStore(ctx, cfg.Store.Path); err == nil {
			st = lite
			defer lite.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue: %v\n", err)
		return 1
	}
	if err := c.run(ctx, lifetimeView{st, cfg.Queue.MaxLifetime}, stdio); err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(stdio.Stderr, "oauthrelay queue %s: %v\n", c.verb, err)
		}
		return 1
	}
	return 0
}

// parseQueue reads the command line; nil and an exit code when it is not
// a valid one (the reason and the usage are printed).
func parseQueue(args []string, stdio IO) (*queueCmd, int) {
	if len(args) == 0 {
		fmt.Fprint(stdio.Stderr, queueUsage)
		return nil, 2
	}
	c := &queueCmd{verb: args[0]}
	if c.verb == "help" || c.verb == "-h" || c.verb == "-help" || c.verb == "--help" {
		fmt.Fprint(stdio.Stdout, queueUsage)
		return nil, 0
	}
	_, acts := queueVerbs[c.verb]
	if c.verb != "list" && c.verb != "show" && !acts {
		return usageError(stdio, "oauthrelay queue: unknown command %q", c.verb)
	}
	fs := newFlagSet("queue "+c.verb, stdio)
	fs.Usage = func() { fmt.Fprint(stdio.Stderr, "\n"+queueUsage) }
	fs.StringVar(&c.path, "config", "", "configuration file or directory")
	fs.BoolVar(&c.asJSON, "json", false, "print JSON")
	switch {
	case c.verb == "list":
		fs.StringVar(&c.state, "state", "", "only messages in this state: queued or held")
		fs.StringVar(&c.account, "account", "", "only messages sent through this account")
	case acts:
		fs.BoolVar(&c.all, "all", false, "every message the command applies to")
	}
	ids, err := parseInterleaved(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0
	}
	if err != nil {
		return nil, 2
	}
	for _, id := range ids {
		c.ids = append(c.ids, normalizeID(id))
	}
	c.account = strings.ToLower(c.account)
	return c.check(stdio)
}

// check validates the arguments of c's command.
func (c *queueCmd) check(stdio IO) (*queueCmd, int) {
	prefix := "oauthrelay queue " + c.verb
	switch {
	case c.path == "":
		return usageError(stdio, "%s: -config is required (the relay's configuration, which names the store)", prefix)
	case c.verb == "list" && len(c.ids) > 0:
		return usageError(stdio, "%s: takes no message IDs (see one message with: oauthrelay queue show ID)", prefix)
	case c.verb == "list" && c.state != "" && c.state != store.StateQueued && c.state != store.StateHeld:
		return usageError(stdio, "%s: -state must be queued or held, not %q", prefix, c.state)
	case c.verb == "show" && len(c.ids) != 1:
		return usageError(stdio, "%s: exactly one message ID is required", prefix)
	case c.verb != "list" && c.verb != "show" && c.all == (len(c.ids) > 0):
		return usageError(stdio, "%s: give message IDs or -all, not both and not neither", prefix)
	}
	for _, id := range c.ids {
		if id == "" {
			return usageError(stdio, "%s: an empty message ID", prefix)
		}
	}
	return c, 0
}

func usageError(stdio IO, format string, a ...any) (*queueCmd, int) {
	fmt.Fprintf(stdio.Stderr, format+"\n\n%s", append(a, queueUsage)...)
	return nil, 2
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments (`queue hold ID -config PATH` as well as `queue hold -config
// PATH ID`); after "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// normalizeID accepts an ID as mailq shows it: queue IDs are upper-case
// Crockford base32, and a copied "!" (held) marker is dropped.
func normalizeID(id string) string {
	return strings.ToUpper(strings.TrimRight(strings.TrimSpace(id), "!*"))
}

// lifetimeView shows each message's expiry under the max_lifetime of the
// configuration, which the relay applies to every queued message, rather
// than the one in force when the message arrived (the stored Expires).
type lifetimeView struct {
	store.Store
	maxLifetime time.Duration
}

func (v lifetimeView) Get(ctx context.Context, id string) (*store.Envelope, error) {
	e, err := v.Store.Get(ctx, id)
	if err == nil {
		e.Expires = e.Received.Add(v.maxLifetime)
	}
	return e, err
}

func (v lifetimeView) List(ctx context.Context, f store.Filter) ([]*store.Envelope, error) {
	list, err := v.Store.List(ctx, f)
	for _, e := range list {
		e.Expires = e.Received.Add(v.maxLifetime)
	}
	return list, err
}

// openQueueStore opens the relay's store. It never creates one: a store
// that does not exist yet means the path or the configuration is not the
// running relay's, and an empty new one would only hide that.
func openQueueStore(ctx context.Context, dir string) (*sqlite.Store, error) {
	file := filepath.Join(dir, sqlite.FileName)
	if _, err := os.Stat(file); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no store at %s: the relay creates it when it first starts with this configuration", dir)
		}
		return nil, storeOpenError(dir, err)
	}
	st, err := sqlite.Open(ctx, dir, sqlite.Options{})
	if err != nil {
		return nil, storeOpenError(dir, err)
	}
	return st, nil
}

// openSharedQueueStore opens the database the instances share, as the
// relay does: the DSN from its secret reference, the user from Vault's
// database engine when vault_credentials is set (revoked by close).
func openSharedQueueStore(ctx context.Context, cfg *config.Config) (st store.Store, close func(), err error) {
	pg := cfg.Store.Postgres
	secretStore, vc, err := resolveSecrets(ctx, cfg, []config.SecretRef{pg.DSN})
	if err != nil {
		return nil, nil, err
	}
	dsn, err := secretStore.Get(pg.DSN)
	if err != nil {
		return nil, nil, err
	}
	// NoMigrate: the command runs beside the relay; only `run` changes
	// the shared schema.
	opts := postgres.Options{Role: pg.Role, MaxConns: 2, NoMigrate: true}
	var creds *secrets.DatabaseCredentials
	if pg.VaultCredentials != "" {
		if creds, err = vc.DatabaseCredentials(ctx, pg.VaultCredentials); err != nil {
			return nil, nil, err
		}
		opts.Credentials = creds.Credentials
	}
	release := func() {
		if creds != nil {
			_ = creds.Close()
		}
	}
	pgStore, err := postgres.Open(ctx, dsn, opts)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("opening the shared store: %w", err)
	}
	return pgStore, func() { pgStore.Close(); release() }, nil
}

// storeOpenError explains the usual cause of a store the command cannot
// open: the store is private to the relay's user (README "store").
func storeOpenError(dir string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("opening the store at %s: %w (the store is private to the relay's user: run the command as that user)", dir, err)
	}
	return fmt.Errorf("opening the store at %s: %w", dir, err)
}

func (c *queueCmd) run(ctx context.Context, st store.Store, stdio IO) error {
	switch c.verb {
	case "list":
		return queueList(ctx, st, store.Filter{State: c.state, Account: c.account}, c.asJSON, stdio.Stdout)
	case "show":
		return queueShow(ctx, st, c.ids[0], c.asJSON, stdio.Stdout)
	}
	return queueAct(ctx, st, c, stdio)
}

// queueEntry is one message in `queue list -json` and `queue show -json`.
type queueEntry struct {
	ID          string           `json:"id"`
	State       string           `json:"state"`
	Account     string           `json:"account"`
	From        string           `json:"from"`
	Size        int64            `json:"size"`
	Received    time.Time        `json:"received"`
	NextAttempt time.Time        `json:"next_attempt"`
	Expires     time.Time        `json:"expires"`
	Attempts    int              `json:"attempts"`
	LastReply   string           `json:"last_reply,omitempty"`
	Recipients  []queueRecipient `json:"recipients"`
	MessageID   string           `json:"message_id,omitempty"`
	Listener    string           `json:"listener,omitempty"`
	Client      string           `json:"client,omitempty"`
	Bounce      bool             `json:"bounce,omitempty"`
	MailParams  []string         `json:"mail_params,omitempty"`
}

type queueRecipient struct {
	Addr      string `json:"address"`
	State     string `json:"state"`
	LastReply string `json:"last_reply,omitempty"`
	Notify    string `json:"notify,omitempty"`
	ORcpt     string `json:"orcpt,omitempty"`
}

func entryOf(e *store.Envelope) queueEntry {
	rcpts := make([]queueRecipient, len(e.Rcpts))
	for i, r := range e.Rcpts {
		rcpts[i] = queueRecipient{Addr: r.Addr, State: r.State, LastReply: r.LastReply, Notify: r.Notify, ORcpt: r.ORcpt}
	}
	return queueEntry{ID: e.ID, State: e.State, Account: e.Account, From: e.From, Size: e.Size, Received: e.Received,
		NextAttempt: e.NextAttempt, Expires: e.Expires, Attempts: e.Attempts, LastReply: e.LastReply, Recipients: rcpts,
		MessageID: e.HeaderID, Listener: e.Listener, Client: e.Client, Bounce: e.Bounce, MailParams: e.MailParams}
}

// historyEntry and eventEntry are a message's history in `queue show -json`.
type historyEntry struct {
	ID         string    `json:"id"`
	Mode       string    `json:"mode"`
	State      string    `json:"state"`
	Listener   string    `json:"listener,omitempty"`
	Client     string    `json:"client,omitempty"`
	Account    string    `json:"account"`
	From       string    `json:"from"`
	Recipients []string  `json:"recipients"`
	Size       int64     `json:"size"`
	MessageID  string    `json:"message_id,omitempty"`
	Received   time.Time `json:"received"`
	Updated    time.Time `json:"updated"`
}

type eventEntry struct {
	At    time.Time `json:"at"`
	Type  string    `json:"type"`
	Rcpt  string    `json:"recipient,omitempty"`
	Reply string    `json:"reply,omitempty"`
}

func historyOf(r *store.Record) *historyEntry {
	if r == nil {
		return nil
	}
	return &historyEntry{ID: r.ID, Mode: r.Mode, State: r.State, Listener: r.Listener, Client: r.Client, Account: r.Account,
		From: r.From, Recipients: r.Rcpts, Size: r.Size, MessageID: r.HeaderID, Received: r.Received, Updated: r.Updated}
}

func eventsOf(events []*store.Event) []eventEntry {
	out := make([]eventEntry, len(events))
	for i, e := range events {
		out[i] = eventEntry{At: e.At, Type: e.Type, Rcpt: e.Rcpt, Reply: e.Reply}
	}
	return out
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false) // Message-IDs are <...>: keep them readable
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// errReported is a failure already printed, message by message.
var errReported = errors.New("reported")

// actResult is what an operator command did to one message.
type actResult struct {
	ID     string `json:"id"`
	Result string `json:"result"` // "done", "unchanged" or "failed"
	Detail string `json:"detail"`
}

// queueAct applies retry, hold, release or delete to the given messages
// or, with -all, to every message it applies to.
func queueAct(ctx context.Context, st store.Store, c *queueCmd, stdio IO) error {
	ids := c.ids
	if c.all {
		err := eachListed(ctx, st, queueVerbs[c.verb], func(m *store.Envelope) error {
			ids = append(ids, m.ID)
			return nil
		})
		if err != nil {
			return err
		}
	}
	now := time.Now()
	results := make([]actResult, 0, len(ids))
	failed := 0
	for _, id := range ids {
		r := actOne(ctx, st, c.verb, id, c.all, now)
		if r.Result == "failed" {
			failed++
		}
		results = append(results, r)
	}
	if c.asJSON {
		if err := writeJSON(stdio.Stdout, map[string]any{"action": c.verb, "results": results}); err != nil {
			return err
		}
	} else {
		printActResults(stdio, c, results, failed)
	}
	if failed > 0 {
		return errReported
	}
	return nil
}

func printActResults(stdio IO, c *queueCmd, results []actResult, failed int) {
	if len(results) == 0 {
		fmt.Fprintln(stdio.Stdout, nothingTo[c.verb])
		return
	}
	for _, r := range results {
		if r.Result == "failed" {
			fmt.Fprintf(stdio.Stderr, "oauthrelay queue %s: %s: %s\n", c.verb, r.ID, r.Detail)
			continue
		}
		fmt.Fprintf(stdio.Stdout, "%s: %s\n", r.ID, r.Detail)
	}
	if failed > 0 && len(results) > 1 {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue %s: %d of %d messages failed\n", c.verb, failed, len(results))
	}
}

var nothingTo = map[string]string{
	"retry":   "No queued message to retry (held messages wait for release)",
	"hold":    "No queued message to hold",
	"release": "No held message to release",
	"delete":  "Queue is empty",
}

// actOne applies verb to one message. Under -all, a message that left
// the queue in the meantime (delivered, say) is not a failure.
func actOne(ctx context.Context, st store.Store, verb, id string, all bool, now time.Time) actResult {
	env, err := st.Get(ctx, id)
	if err == nil {
		if r, settled := precheck(verb, env); settled {
			return r
		}
		err = apply(ctx, st, verb, id, now)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		r := actResult{ID: id, Result: "failed", Detail: notQueued(ctx, st, id)}
		if all {
			r.Result = "unchanged"
		}
		return r
	case err != nil:
		return actResult{ID: id, Result: "failed", Detail: err.Error()}
	}
	return actResult{ID: id, Result: "done", Detail: doneDetail(verb, env, now)}
}

// precheck settles a command its message's state makes moot or wrong.
func precheck(verb string, env *store.Envelope) (actResult, bool) {
	held := env.State == store.StateHeld
	switch {
	case verb == "hold" && held:
		return actResult{ID: env.ID, Result: "unchanged", Detail: "already held"}, true
	case verb == "release" && !held:
		return actResult{ID: env.ID, Result: "unchanged", Detail: "not held"}, true
	case verb == "retry" && held:
		return actResult{ID: env.ID, Result: "failed", Detail: "held: release it first (oauthrelay queue release " + env.ID + ")"}, true
	}
	return actResult{}, false
}

func apply(ctx context.Context, st store.Store, verb, id string, now time.Time) error {
	switch verb {
	case "retry":
		return st.Retry(ctx, id, now)
	case "hold":
		return st.Hold(ctx, id)
	case "release":
		return st.Release(ctx, id)
	case "delete":
		return st.Delete(ctx, id)
	}
	return fmt.Errorf("unknown command %q", verb)
}

func doneDetail(verb string, env *store.Envelope, now time.Time) string {
	switch verb {
	case "retry":
		return "due now: the relay attempts it within a few seconds"
	case "hold":
		return "held: no attempts until released"
	case "release":
		if env.NextAttempt.After(now) {
			return fmt.Sprintf("released: next attempt %s; to attempt it now: oauthrelay queue retry %s", when(env.NextAttempt, now), env.ID)
		}
		return "released: due now"
	}
	return "deleted without a bounce (its history is kept)"
}

// notQueued explains why id is not in the queue.
func notQueued(ctx context.Context, st store.Store, id string) string {
	rec, _, err := st.History(ctx, id)
	if err != nil || rec == nil {
		return "no such message in the queue or its history"
	}
	return fmt.Sprintf("not in the queue any more: %s (%s mode), %s", rec.State, rec.Mode, stamp(rec.Updated))
}
