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

	"github.com/oauthrelay/oauthrelay/internal/admin"
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
	_, acts := admin.ParseAction(c.verb)
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
		c.ids = append(c.ids, admin.NormalizeID(id))
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

// lifetimeView shows each message's expiry under the configuration's
// max_lifetime (admin.LifetimeView).
type lifetimeView admin.LifetimeView

func (v lifetimeView) Get(ctx context.Context, id string) (*store.Envelope, error) {
	return admin.LifetimeView(v).Get(ctx, id)
}

func (v lifetimeView) List(ctx context.Context, f store.Filter) ([]*store.Envelope, error) {
	return admin.LifetimeView(v).List(ctx, f)
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

func (c *queueCmd) run(ctx context.Context, st admin.QueueStore, stdio IO) error {
	switch c.verb {
	case "list":
		return queueList(ctx, st, store.Filter{State: c.state, Account: c.account}, c.asJSON, stdio.Stdout)
	case "show":
		return queueShow(ctx, st, c.ids[0], c.asJSON, stdio.Stdout)
	}
	return queueAct(ctx, st, c, stdio)
}

// The JSON shapes of the commands are the admin API's (admin.QueueEntry …).
type (
	queueEntry = admin.QueueEntry
	eventEntry = admin.EventEntry
	actResult  = admin.Result
)

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false) // Message-IDs are <...>: keep them readable
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// errReported is a failure already printed, message by message.
var errReported = errors.New("reported")

// queueAct applies retry, hold, release or delete to the given messages
// or, with -all, to every message it applies to.
func queueAct(ctx context.Context, st admin.QueueStore, c *queueCmd, stdio IO) error {
	results, err := admin.Ops{Store: st}.Act(ctx, admin.Action(c.verb), c.ids, c.all)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Result == admin.Failed {
			failed++
		}
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
		if r.Result == admin.Failed {
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
