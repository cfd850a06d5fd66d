package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/store/sqlite"
)

// queueUsage documents `oauthrelay queue`, the relay's mailq and postsuper
// (README "Queue mode").
const queueUsage = `Usage:
  oauthrelay queue list    -config PATH [-json] [-state queued|held] [-account ADDRESS]
  oauthrelay queue show    -config PATH [-json] ID
  oauthrelay queue retry   -config PATH (ID... | -all)     attempt now
  oauthrelay queue hold    -config PATH (ID... | -all)     no attempts until released
  oauthrelay queue release -config PATH (ID... | -all)
  oauthrelay queue delete  -config PATH (ID... | -all)     remove without a bounce (history kept)

The commands work while the relay runs: they open the same store.
`

func cmdQueue(ctx context.Context, args []string, stdio IO) int {
	if len(args) == 0 {
		fmt.Fprint(stdio.Stderr, queueUsage)
		return 2
	}
	sub, rest := args[0], args[1:]
	fs := newFlagSet("queue "+sub, stdio)
	path := fs.String("config", "", "configuration file or directory")
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "every queued message (retry, hold, release, delete)")
	state := fs.String("state", "", "list only messages in this state (queued, held)")
	account := fs.String("account", "", "list only messages of this account")
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	var run func(context.Context, store.Store) error
	out := stdio.Stdout
	switch sub {
	case "list":
		run = func(ctx context.Context, st store.Store) error {
			return queueList(ctx, st, store.Filter{State: *state, Account: strings.ToLower(*account)}, *asJSON, out)
		}
	case "show":
		if fs.NArg() != 1 {
			fmt.Fprint(stdio.Stderr, "oauthrelay queue show: one message ID is required\n\n"+queueUsage)
			return 2
		}
		run = func(ctx context.Context, st store.Store) error { return queueShow(ctx, st, fs.Arg(0), *asJSON, out) }
	case "retry", "hold", "release", "delete":
		if *all == (fs.NArg() > 0) {
			fmt.Fprintf(stdio.Stderr, "oauthrelay queue %s: give message IDs or -all\n\n%s", sub, queueUsage)
			return 2
		}
		ids := fs.Args()
		run = func(ctx context.Context, st store.Store) error {
			return queueAct(ctx, st, sub, ids, *all, *asJSON, out)
		}
	default:
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue: unknown command %q\n\n%s", sub, queueUsage)
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{ClientsOptional: true}, stdio)
	if cfg == nil {
		return 1
	}
	if cfg.Store == nil {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue: %s has no store block, so there is no queue\n", *path)
		return 1
	}
	st, err := sqlite.Open(ctx, cfg.Store.Path, sqlite.Options{})
	if err != nil {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue: opening the store at %s: %v\n", cfg.Store.Path, err)
		return 1
	}
	defer st.Close()
	if err := run(ctx, st); err != nil {
		fmt.Fprintf(stdio.Stderr, "oauthrelay queue %s: %v\n", sub, err)
		return 1
	}
	return 0
}

// queueEntry is one message in `queue list -json` and `queue show -json`.
type queueEntry struct {
	ID          string            `json:"id"`
	State       string            `json:"state"`
	Account     string            `json:"account"`
	From        string            `json:"from"`
	Size        int64             `json:"size"`
	Received    time.Time         `json:"received"`
	NextAttempt time.Time         `json:"next_attempt"`
	Expires     time.Time         `json:"expires"`
	Attempts    int               `json:"attempts"`
	LastReply   string            `json:"last_reply,omitempty"`
	Recipients  []store.Recipient `json:"recipients"`
	MessageID   string            `json:"message_id,omitempty"`
	Listener    string            `json:"listener,omitempty"`
	Client      string            `json:"client,omitempty"`
	Bounce      bool              `json:"bounce,omitempty"`
}

func entryOf(e *store.Envelope) queueEntry {
	return queueEntry{ID: e.ID, State: e.State, Account: e.Account, From: e.From, Size: e.Size, Received: e.Received,
		NextAttempt: e.NextAttempt, Expires: e.Expires, Attempts: e.Attempts, LastReply: e.LastReply, Recipients: e.Rcpts,
		MessageID: e.HeaderID, Listener: e.Listener, Client: e.Client, Bounce: e.Bounce}
}

func queueList(ctx context.Context, st store.Store, f store.Filter, asJSON bool, out io.Writer) error {
	msgs, err := st.List(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		entries := make([]queueEntry, 0, len(msgs))
		for _, m := range msgs {
			entries = append(entries, entryOf(m))
		}
		return writeJSON(out, entries)
	}
	if len(msgs) == 0 {
		fmt.Fprintln(out, "Queue is empty")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSIZE\tARRIVED\tACCOUNT\tFROM\tPENDING\tATTEMPTS\tNEXT ATTEMPT\tLAST REPLY")
	var bytes int64
	for _, m := range msgs {
		bytes += m.Size
		next := m.NextAttempt.Local().Format(time.DateTime)
		if m.State == store.StateHeld {
			next = "held"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.State, m.Size, m.Received.Local().Format(time.DateTime),
			m.Account, m.From, strings.Join(pending(m), ","), m.Attempts, next, clip(m.LastReply, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "-- %d KiB in %d message(s)\n", (bytes+1023)/1024, len(msgs))
	return nil
}

func pending(m *store.Envelope) []string {
	var out []string
	for _, r := range m.Rcpts {
		if r.State == store.RcptPending {
			out = append(out, r.Addr)
		}
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// queueShow prints a message's envelope, its recipients' states and its
// trail (README "Delivery history"); never its body.
func queueShow(ctx context.Context, st store.Store, id string, asJSON bool, out io.Writer) error {
	env, err := st.Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	rec, events, herr := st.History(ctx, id)
	if env == nil && herr != nil {
		if errors.Is(herr, store.ErrNotFound) {
			return fmt.Errorf("no message %s in the queue or its history", id)
		}
		return herr
	}
	if asJSON {
		v := map[string]any{"history": rec, "events": events}
		if env != nil {
			v["queue"] = entryOf(env)
		}
		return writeJSON(out, v)
	}
	if env != nil {
		fmt.Fprintf(out, "Message %s (%s)\n  account %s, from <%s>, %d bytes\n  arrived %s, expires %s\n  attempts %d, next %s\n",
			env.ID, env.State, env.Account, env.From, env.Size, env.Received.Local().Format(time.DateTime),
			env.Expires.Local().Format(time.DateTime), env.Attempts, env.NextAttempt.Local().Format(time.DateTime))
		if env.HeaderID != "" {
			fmt.Fprintf(out, "  Message-ID %s\n", env.HeaderID)
		}
		fmt.Fprintln(out, "Recipients:")
		for _, r := range env.Rcpts {
			fmt.Fprintf(out, "  %-9s <%s>  %s\n", r.State, r.Addr, r.LastReply)
		}
	} else if rec != nil {
		fmt.Fprintf(out, "Message %s (%s, %s mode; no longer queued)\n  account %s, from <%s>, %d bytes, to %s\n",
			rec.ID, rec.State, rec.Mode, rec.Account, rec.From, rec.Size, strings.Join(rec.Rcpts, ", "))
	}
	fmt.Fprintln(out, "Trail:")
	for _, e := range events {
		line := fmt.Sprintf("  %s  %-9s", e.At.Local().Format("2006-01-02 15:04:05.000"), e.Type)
		if e.Rcpt != "" {
			line += " <" + e.Rcpt + ">"
		}
		if e.Reply != "" {
			line += "  " + e.Reply
		}
		fmt.Fprintln(out, line)
	}
	return nil
}

// queueAct applies an operator command to the given messages or to every
// queued one.
func queueAct(ctx context.Context, st store.Store, verb string, ids []string, all, asJSON bool, out io.Writer) error {
	if all {
		msgs, err := st.List(ctx, store.Filter{})
		if err != nil {
			return err
		}
		for _, m := range msgs {
			ids = append(ids, m.ID)
		}
	}
	now := time.Now()
	done, failed := []string{}, map[string]string{}
	for _, id := range ids {
		var err error
		switch verb {
		case "retry":
			err = st.Retry(ctx, id, now)
		case "hold":
			err = st.Hold(ctx, id)
		case "release":
			err = st.Release(ctx, id)
		case "delete":
			err = st.Delete(ctx, id)
		}
		if err != nil {
			failed[id] = err.Error()
			continue
		}
		done = append(done, id)
	}
	if asJSON {
		if err := writeJSON(out, map[string]any{"action": verb, "done": done, "failed": failed}); err != nil {
			return err
		}
	} else {
		for _, id := range done {
			fmt.Fprintf(out, "%s: %s\n", id, pastTense[verb])
		}
		for id, why := range failed {
			fmt.Fprintf(out, "%s: not %s: %s\n", id, pastTense[verb], why)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d message(s) failed", len(failed), len(ids))
	}
	return nil
}

var pastTense = map[string]string{"retry": "scheduled for an attempt now", "hold": "held", "release": "released", "delete": "deleted"}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
