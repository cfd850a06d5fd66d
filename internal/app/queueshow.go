package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/admin"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// The list is laid out like Postfix's mailq: a line per message with its
// ID ("!" when held), size, arrival and sender, then, indented, what the
// relay knows about it: its account and schedule, each reason in
// parentheses followed by the pending recipients it applies to.
const (
	mailqIndent  = "                                                " // under the sender column
	maxReasonLen = 120
)

var mailqHeader = fmt.Sprintf("%-17s %8s %-19s  %s", "-Queue ID-", "--Size--", "---Arrival Time----", "-Sender/Recipient-------")

// listPage is how many messages `queue list` reads at a time.
const listPage = admin.ListPage

func queueList(ctx context.Context, st admin.QueueStore, f store.Filter, asJSON bool, out io.Writer) error {
	if asJSON {
		return queueListJSON(ctx, st, f, out)
	}
	now := time.Now()
	var size int64
	count, held := 0, 0
	err := admin.Ops{Store: st}.Each(ctx, f, func(m *store.Envelope) error {
		if count == 0 {
			fmt.Fprintln(out, mailqHeader)
		}
		writeMailqEntry(out, m, now)
		count++
		size += m.Size
		if m.State == store.StateHeld {
			held++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if count == 0 {
		if f.State == "" && f.Account == "" {
			fmt.Fprintln(out, "Queue is empty")
		} else {
			fmt.Fprintf(out, "No message in the queue matches%s\n", filterText(f))
		}
		return nil
	}
	tail := ""
	if held > 0 {
		tail = fmt.Sprintf(", %d held", held)
	}
	fmt.Fprintf(out, "-- %d KiB in %s%s%s.\n", (size+1023)/1024, plural(count, "message"), tail, filterText(f))
	return nil
}

// queueListJSON writes the list as one JSON array, an entry at a time.
func queueListJSON(ctx context.Context, st admin.QueueStore, f store.Filter, out io.Writer) error {
	sep := "[\n"
	err := admin.Ops{Store: st}.Each(ctx, f, func(m *store.Envelope) error {
		var entry bytes.Buffer
		enc := json.NewEncoder(&entry)
		enc.SetEscapeHTML(false) // as writeJSON
		enc.SetIndent("  ", "  ")
		if err := enc.Encode(admin.EntryOf(m)); err != nil {
			return err
		}
		_, err := fmt.Fprintf(out, "%s  %s", sep, bytes.TrimRight(entry.Bytes(), "\n"))
		sep = ",\n"
		return err
	})
	if err != nil {
		return err
	}
	if sep == "[\n" {
		_, err = fmt.Fprintln(out, "[]")
		return err
	}
	_, err = fmt.Fprintln(out, "\n]")
	return err
}

func filterText(f store.Filter) string {
	var parts []string
	if f.State != "" {
		parts = append(parts, "-state "+f.State)
	}
	if f.Account != "" {
		parts = append(parts, "-account "+f.Account)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " ") + ")"
}

func writeMailqEntry(out io.Writer, m *store.Envelope, now time.Time) {
	id := m.ID
	if m.State == store.StateHeld {
		id += "!"
	}
	fmt.Fprintf(out, "%-17s %8d %-19s  %s\n", id, m.Size, stamp(m.Received), m.From)
	fmt.Fprintf(out, "%s%s\n", mailqIndent, statusLine(m, now))
	for _, g := range pendingByReason(m) {
		if g.reason != "" {
			fmt.Fprintf(out, "%s(%s)\n", mailqIndent, admin.Clip(g.reason, maxReasonLen))
		}
		for _, r := range g.rcpts {
			fmt.Fprintf(out, "%s%s\n", mailqIndent, r)
		}
	}
	fmt.Fprintln(out)
}

// statusLine says through which account a message goes, how often it was
// tried and when it is tried next.
func statusLine(m *store.Envelope, now time.Time) string {
	parts := []string{"account " + m.Account}
	if m.Bounce {
		parts = append(parts, "delivery-status notification")
	}
	if m.Attempts == 0 {
		parts = append(parts, "not attempted yet")
	} else {
		parts = append(parts, plural(m.Attempts, "attempt"))
	}
	if m.State == store.StateHeld {
		parts = append(parts, "held: no attempts until released")
	} else {
		parts = append(parts, "next attempt "+when(m.NextAttempt, now))
	}
	return strings.Join(parts, ", ")
}

// reasonGroup is a reason and the pending recipients it applies to.
type reasonGroup struct {
	reason string
	rcpts  []string
}

// pendingByReason groups the pending recipients by their last reply, in
// order of first appearance, as mailq does; a recipient without a reply
// of its own takes the message's (a connection that failed, say).
func pendingByReason(m *store.Envelope) []reasonGroup {
	var groups []reasonGroup
	index := map[string]int{}
	for _, r := range m.Rcpts {
		if r.State != store.RcptPending {
			continue
		}
		reason := r.LastReply
		if reason == "" {
			reason = m.LastReply
		}
		i, ok := index[reason]
		if !ok {
			i = len(groups)
			index[reason] = i
			groups = append(groups, reasonGroup{reason: reason})
		}
		groups[i].rcpts = append(groups[i].rcpts, r.Addr)
	}
	return groups
}

// queueShow prints a message's envelope, its recipients' states and its
// trail (README "Delivery history"); never its body. A message no longer
// queued, or delivered directly, is shown from its history.
func queueShow(ctx context.Context, st admin.QueueStore, id string, asJSON bool, out io.Writer) error {
	m, err := admin.Ops{Store: st}.Show(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(out, m.View())
	}
	if m.Envelope != nil {
		writeQueued(out, m.Envelope, time.Now())
	} else {
		writeRecord(out, m.Record)
	}
	writeTrail(out, m.Events)
	return nil
}

func writeQueued(out io.Writer, e *store.Envelope, now time.Time) {
	status := e.State + ", " + plural(e.Attempts, "attempt") + ", next attempt " + when(e.NextAttempt, now)
	if e.State == store.StateHeld {
		status = "held (no attempts until released), " + plural(e.Attempts, "attempt")
	}
	fmt.Fprintf(out, "Message %s: %s\n", e.ID, status)
	field(out, "account", e.Account)
	field(out, "from", "<"+e.From+">")
	field(out, "size", plural(int(e.Size), "byte"))
	field(out, "message-id", e.HeaderID)
	field(out, "arrived", stamp(e.Received)+origin(e.Listener, e.Client))
	field(out, "expires", when(e.Expires, now)+": then its pending recipients bounce")
	field(out, "parameters", strings.Join(e.MailParams, " "))
	if e.Bounce {
		field(out, "kind", "delivery-status notification (never bounced itself)")
	}
	field(out, "last reply", e.LastReply)
	fmt.Fprintln(out, "Recipients:")
	for _, r := range e.Rcpts {
		line := fmt.Sprintf("  %-9s  <%s>", r.State, r.Addr)
		if r.LastReply != "" {
			line += "  " + r.LastReply
		}
		fmt.Fprintln(out, line)
	}
}

func writeRecord(out io.Writer, r *store.Record) {
	fmt.Fprintf(out, "Message %s: %s (%s mode; not in the queue)\n", r.ID, r.State, r.Mode)
	field(out, "account", r.Account)
	field(out, "from", "<"+r.From+">")
	field(out, "to", strings.Join(r.Rcpts, ", "))
	field(out, "size", plural(int(r.Size), "byte"))
	field(out, "message-id", r.HeaderID)
	field(out, "arrived", stamp(r.Received)+origin(r.Listener, r.Client))
	field(out, "last change", stamp(r.Updated))
}

func writeTrail(out io.Writer, events []*store.Event) {
	fmt.Fprintln(out, "Trail:")
	if len(events) == 0 {
		fmt.Fprintln(out, "  (nothing recorded)")
	}
	for _, e := range events {
		line := fmt.Sprintf("  %s  %-9s", e.At.Local().Format("2006-01-02 15:04:05.000"), e.Type)
		if e.Rcpt != "" {
			line += "  <" + e.Rcpt + ">"
		}
		if e.Reply != "" {
			line += "  " + e.Reply
		}
		fmt.Fprintln(out, strings.TrimRight(line, " "))
	}
}

func field(out io.Writer, name, value string) {
	if value != "" && value != "<>" {
		fmt.Fprintf(out, "  %-11s %s\n", name, value)
	}
}

func origin(listener, client string) string {
	s := ""
	if listener != "" {
		s += fmt.Sprintf(" on listener %q", listener)
	}
	if client != "" {
		s += fmt.Sprintf(" from client %q", client)
	}
	return s
}

// stamp writes a time as mailq does: local time, to the second.
func stamp(t time.Time) string { return admin.Stamp(t, time.Local) }

// when writes t with how far it is from now: "2026-11-26 11:00:00 (in
// 59m)"; a time that has passed is due.
func when(t, now time.Time) string { return admin.When(t, now, time.Local) }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
