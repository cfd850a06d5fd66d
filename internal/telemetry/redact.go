package telemetry

import (
	"bytes"
	"io"
	"sync"
)

// Redactor is the log's safety net: it replaces every registered secret
// value (refresh tokens, client secrets, access tokens) that reaches the
// output with [REDACTED]. The code never logs secrets on purpose; this
// catches the accident, such as a library quoting a response body.
//
// Lookup cost is one map probe per byte of output: secrets are indexed by
// their first prefixLen bytes, so thousands of accounts do not slow logging.
type Redactor struct {
	out io.Writer

	mu      sync.RWMutex
	byKey   map[string]string   // registration key -> value
	byStart map[string][]string // first prefixLen bytes -> values
	short   []string            // values shorter than prefixLen
}

const (
	prefixLen = 8
	// minSecretLen keeps trivial values (which cannot be secrets worth
	// the name) from garbling the log.
	minSecretLen = 6
	redacted     = "[REDACTED]"
)

// NewRedactor writes to out.
func NewRedactor(out io.Writer) *Redactor {
	return &Redactor{out: out, byKey: map[string]string{}, byStart: map[string][]string{}}
}

// Set registers value under key, replacing the key's previous value (an
// account's access token is replaced at each refresh, so the set does not
// grow without bound).
func (r *Redactor) Set(key, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byKey[key]; ok {
		if old == value {
			return
		}
		r.removeLocked(old)
	}
	if len(value) < minSecretLen {
		delete(r.byKey, key)
		return
	}
	r.byKey[key] = value
	if len(value) < prefixLen {
		r.short = append(r.short, value)
		return
	}
	p := value[:prefixLen]
	r.byStart[p] = append(r.byStart[p], value)
}

func (r *Redactor) removeLocked(v string) {
	if len(v) < prefixLen {
		r.short = remove(r.short, v)
		return
	}
	p := v[:prefixLen]
	if rest := remove(r.byStart[p], v); len(rest) > 0 {
		r.byStart[p] = rest
	} else {
		delete(r.byStart, p)
	}
}

func remove(list []string, v string) []string {
	for i, s := range list {
		if s == v {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// Write redacts p and writes it in one call (log lines stay whole).
func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.RLock()
	out, _ := r.redactLocked(p)
	r.mu.RUnlock()
	if _, err := r.out.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RedactString returns s with every registered secret replaced.
func (r *Redactor) RedactString(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.emptyLocked() {
		return s
	}
	if out, changed := r.redactLocked([]byte(s)); changed {
		return string(out)
	}
	return s
}

func (r *Redactor) emptyLocked() bool { return len(r.byStart) == 0 && len(r.short) == 0 }

// redactLocked returns p with every registered secret replaced, and
// whether anything was.
func (r *Redactor) redactLocked(p []byte) ([]byte, bool) {
	if r.emptyLocked() {
		return p, false
	}
	var buf *bytes.Buffer
	last := 0
	for i := 0; i+minSecretLen <= len(p); {
		match := ""
		if i+prefixLen <= len(p) {
			for _, v := range r.byStart[string(p[i:i+prefixLen])] {
				if len(v) > len(match) && bytes.HasPrefix(p[i:], []byte(v)) {
					match = v
				}
			}
		}
		for _, v := range r.short {
			if len(v) > len(match) && bytes.HasPrefix(p[i:], []byte(v)) {
				match = v
			}
		}
		if match == "" {
			i++
			continue
		}
		if buf == nil {
			buf = bytes.NewBuffer(make([]byte, 0, len(p)))
		}
		buf.Write(p[last:i])
		buf.WriteString(redacted)
		i += len(match)
		last = i
	}
	if buf == nil {
		return p, false
	}
	buf.Write(p[last:])
	return buf.Bytes(), true
}
