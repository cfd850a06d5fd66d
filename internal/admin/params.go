package admin

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/store"
)

// paramError is a query parameter the API or a page cannot use: 400,
// naming the parameter.
type paramError struct {
	name, msg string
}

func (e *paramError) Error() string { return e.name + ": " + e.msg }

// Page sizes: what a list shows when no limit is given, and the most it
// may ask for (the store's own cap on a history search).
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// messageStates are the states a history search may ask for.
var messageStates = []string{store.StateQueued, store.StateHeld, store.StateDelivered, store.StateBounced,
	store.StateDeleted, store.StateSent, store.StateRefused}

// searchForm is a history search as typed, so that the page can show it
// back; query turns it into a store.HistoryQuery.
type searchForm struct {
	From, Rcpt, MessageID, ID, Subject, State, Account, Since, Until, Before, Limit string
}

var searchParams = []string{"from", "rcpt", "message_id", "id", "subject", "state", "account", "since", "until", "before", "limit"}

func searchFormOf(q url.Values) searchForm {
	g := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return searchForm{From: g("from"), Rcpt: g("rcpt"), MessageID: g("message_id"), ID: g("id"), Subject: g("subject"),
		State: g("state"), Account: g("account"), Since: g("since"), Until: g("until"), Before: g("before"), Limit: g("limit")}
}

// values is the search as query parameters, without the empty ones and
// without paging (before), for links to other pages of the result.
func (f searchForm) values() url.Values {
	return nonEmpty(map[string]string{"from": f.From, "rcpt": f.Rcpt, "message_id": f.MessageID, "id": f.ID,
		"subject": f.Subject, "state": f.State, "account": f.Account, "since": f.Since, "until": f.Until, "limit": f.Limit})
}

func nonEmpty(params map[string]string) url.Values {
	v := url.Values{}
	for k, s := range params {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// A search with a filter (part of an address or subject, a state, an
// account) and no since covers defaultSearchWindow back from until (now
// when not given): such a search may read every record of its range
// when few match (searchlimit.go). since=all (sinceAll) searches the
// whole history; a queue ID or Message-ID finds its records directly,
// without a window; a search without any filter reads the newest
// records and stops at the page size, so it needs none.
const (
	defaultSearchWindow = 24 * time.Hour
	sinceAll            = "all"
)

// windowText is defaultSearchWindow as a search's since takes it.
var windowText = strconv.Itoa(int(defaultSearchWindow/time.Hour)) + "h"

// needsWindow: the search has a filter, no since and nothing exact to
// find its records by.
func (f searchForm) needsWindow() bool {
	filtered := f.From != "" || f.Rcpt != "" || f.Subject != "" || f.State != "" || f.Account != ""
	return filtered && f.Since == "" && f.ID == "" && f.MessageID == ""
}

// query checks the search; subjects says whether the store keeps them
// (a subject search would otherwise find nothing, silently). windowed:
// Since is the default window's (needsWindow).
func (f searchForm) query(now time.Time, subjects bool, def int) (q store.HistoryQuery, windowed bool, err error) {
	q = store.HistoryQuery{From: f.From, Rcpt: f.Rcpt, HeaderID: f.MessageID,
		Subject: f.Subject, State: f.State, Account: f.Account}
	if q.ID, err = idParam("id", f.ID); err != nil {
		return q, false, err
	}
	if q.Before, err = idParam("before", f.Before); err != nil {
		return q, false, err
	}
	switch {
	case f.Subject != "" && !subjects:
		return q, false, &paramError{"subject", "the store keeps no subjects (store { history_subjects = false })"}
	case f.State != "" && !slices.Contains(messageStates, f.State):
		return q, false, &paramError{"state", fmt.Sprintf("%q is not a state; use one of %s", f.State, strings.Join(messageStates, ", "))}
	}
	if !strings.EqualFold(f.Since, sinceAll) {
		if q.Since, err = parseTime("since", f.Since, now); err != nil {
			return q, false, err
		}
	}
	if q.Until, err = parseTime("until", f.Until, now); err != nil {
		return q, false, err
	}
	if windowed = f.needsWindow(); windowed {
		end := now
		if !q.Until.IsZero() {
			end = q.Until
		}
		q.Since = end.Add(-defaultSearchWindow)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return q, false, &paramError{"until", "must be after since"}
	}
	q.Limit, err = parseLimit(f.Limit, def)
	return q, windowed, err
}

// idParam is a queue ID parameter as the store takes it (NormalizeID).
// One that normalises to nothing ("*", "!": mailq's markers alone) is an
// error: taken as absent, it would drop the filter, and with it the
// default window that an exact ID lifts.
func idParam(name, v string) (string, error) {
	id := NormalizeID(v)
	if id == "" && v != "" {
		return "", &paramError{name, fmt.Sprintf("%q is not a queue ID", v)}
	}
	return id, nil
}

// timeLayouts are the times a search takes besides RFC 3339: what an
// operator types, and what a browser's date and datetime-local inputs
// send, read as UTC.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02"}

// parseTime reads a time as RFC 3339, a UTC date and time, or a
// duration back from now in the configuration's words ("24h", "7d").
func parseTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	if d, err := config.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, &paramError{name, fmt.Sprintf("%q is neither a time (RFC 3339, or 2006-01-02[T15:04] in UTC) nor a duration back from now (\"24h\", \"7d\")%s", v, allHint(name))}
}

// allHint tells how to search the whole history, where it applies.
func allHint(name string) string {
	if name == "since" {
		return `, nor "all" (the whole history)`
	}
	return ""
}

func parseLimit(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, &paramError{"limit", fmt.Sprintf("%q is not a number from 1 to %d", v, maxLimit)}
	}
	return n, nil
}

// queueForm is a queue listing as asked for.
type queueForm struct {
	State, Account, After, Limit string
}

var queueParams = []string{"state", "account", "after", "limit"}

func queueFormOf(q url.Values) queueForm {
	g := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return queueForm{State: g("state"), Account: g("account"), After: g("after"), Limit: g("limit")}
}

// values is the listing as query parameters, without the empty ones and
// without paging (after).
func (f queueForm) values() url.Values {
	return nonEmpty(map[string]string{"state": f.State, "account": f.Account, "limit": f.Limit})
}

func (f queueForm) filter(def int) (store.Filter, error) {
	flt := store.Filter{State: f.State, Account: strings.ToLower(f.Account)}
	if f.State != "" && f.State != store.StateQueued && f.State != store.StateHeld {
		return flt, &paramError{"state", fmt.Sprintf("must be queued or held, not %q", f.State)}
	}
	var err error
	if flt.After, err = idParam("after", f.After); err != nil {
		return flt, err
	}
	flt.Limit, err = parseLimit(f.Limit, def)
	return flt, err
}

// unknownParam names the first parameter the API does not take: a typo
// ("recipient=") would otherwise widen a search silently.
func unknownParam(q url.Values, known []string) error {
	var names []string
	for k := range q {
		if !slices.Contains(known, k) {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return &paramError{names[0], "unknown parameter; this endpoint takes " + strings.Join(known, ", ")}
}
