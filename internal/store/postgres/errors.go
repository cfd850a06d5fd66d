package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// mapErr classifies an error of a pgx call: a context that ended passes
// through; a data exception or a constraint violation (SQLSTATE classes
// 22 and 23) is the caller's mistake; anything else (the database is
// unreachable, refuses the login, is shutting down, out of space, the
// pool has no connection) means the store cannot take writes now:
// store.ErrUnavailable. The cause is kept, with every known password
// scrubbed from its text.
func (s *Store) mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	err = s.clean(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isCallerData(err) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", store.ErrUnavailable, op, err)
}

// readErr is mapErr for a call made under ctx: when ctx ended, the caller
// learns why rather than pgx's rendering of it.
func (s *Store) readErr(ctx context.Context, op string, err error) error {
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return s.mapErr(op, err)
}

func isCallerData(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// isUniqueViolation reports a duplicate key (SQLSTATE 23505).
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// clean returns err with every known password scrubbed from its text.
// A pgconn.ConnectError is cut out of the chain: it carries the
// connection configuration, password included. An error whose text held
// a password is not kept at all.
func (s *Store) clean(err error) error {
	text := err.Error()
	scrubbed := s.secrets.scrub(text)
	if scrubbed != text {
		return &cleanError{text: scrubbed}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return &cleanError{text: text, cause: ce.Unwrap()}
	}
	return err
}

// cleanError is an error whose text was scrubbed; it unwraps to what the
// database or the network said, or to nothing when that text held a
// password.
type cleanError struct {
	text  string
	cause error
}

func (e *cleanError) Error() string { return e.text }
func (e *cleanError) Unwrap() error { return e.cause }

// secrets are the passwords that must never appear in an error or a log
// line: the DSN's and those Options.Credentials returned lately.
type secrets struct {
	mu   sync.Mutex
	list []string
}

// keptPasswords bounds the credentials' passwords remembered: those of
// the connections still open, rotated every few hours at most.
const keptPasswords = 16

func (s *secrets) add(password string) {
	if password == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.list {
		if p == password {
			return
		}
	}
	if len(s.list) == keptPasswords {
		s.list = append(s.list[:1], s.list[2:]...) // the DSN's stays first
	}
	s.list = append(s.list, password)
}

// kvPassword finds the password of a key=value DSN.
var kvPassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// addDSN remembers the password of a DSN before pgx parses it, so that
// even an error about a DSN pgx cannot parse does not show it: the
// password of a URI's user information or password parameter, or of a
// key=value string.
func (s *secrets) addDSN(dsn string) {
	if u, err := url.Parse(dsn); err == nil {
		if p, ok := u.User.Password(); ok {
			s.add(p)
		}
		s.add(u.Query().Get("password"))
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		s.add(m[1])
		s.add(strings.Trim(m[1], "'"))
	}
	// A URI too broken for net/url: what stands between the scheme's
	// user and the '@'.
	if rest, ok := strings.CutPrefix(dsn, "postgres://"); ok {
		s.addUserinfo(rest)
	} else if rest, ok := strings.CutPrefix(dsn, "postgresql://"); ok {
		s.addUserinfo(rest)
	}
}

// addUserinfo remembers what may be the password of a URI's user
// information, read up to the last '@': all after the user's ':', and
// each part of it between '@'s, which a URI with an unescaped '@' in its
// password would make part of the host name in an error.
func (s *secrets) addUserinfo(rest string) {
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return
	}
	_, p, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return
	}
	for _, part := range append(strings.Split(p, "@"), p) {
		s.add(part)
		if u, err := url.PathUnescape(part); err == nil {
			s.add(u)
		}
	}
}

// scrub replaces every known password in text, as written and as escaped
// in a URI.
func (s *secrets) scrub(text string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.list {
		for _, form := range []string{p, url.QueryEscape(p), url.PathEscape(p), url.UserPassword("", p).String()[1:]} {
			if form != "" {
				text = strings.ReplaceAll(text, form, "xxxxx")
			}
		}
	}
	return text
}
