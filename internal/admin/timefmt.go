package admin

import (
	"fmt"
	"time"
)

// Stamp writes a time to the second, as mailq does, in loc (nil: the
// local time zone); in UTC it says so. A zero time is "-".
func Stamp(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "-"
	}
	if loc == nil {
		loc = time.Local
	}
	s := t.In(loc).Format(time.DateTime)
	if loc == time.UTC {
		s += " UTC"
	}
	return s
}

// When writes t with how far it is from now: "2026-11-26 11:00:00 (in
// 59m)"; a time that has passed is due.
func When(t, now time.Time, loc *time.Location) string {
	d := t.Sub(now)
	if d <= 0 {
		return Stamp(t, loc) + " (due)"
	}
	return Stamp(t, loc) + " (in " + Span(d) + ")"
}

// Span writes a duration the way the configuration does, truncated to its
// two largest units: "45s", "59m", "3h05m", "4d12h".
func Span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		m := int(d / time.Minute)
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
	h := int(d / time.Hour)
	return fmt.Sprintf("%dd%02dh", h/24, h%24)
}

// Relative says how far t is from now in words: "3m ago", "in 2h05m",
// "now" within a second.
func Relative(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case t.IsZero():
		return ""
	case d > -time.Second && d < time.Second:
		return "now"
	case d > 0:
		return "in " + Span(d)
	}
	return Span(-d) + " ago"
}

// Clip shortens s to n characters (not bytes: replies may be UTF-8).
func Clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
