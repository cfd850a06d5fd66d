package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

func TestDBErrorClassifies(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	cases := []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
	}{
		{"refused connection", context.Background(), dial, true},
		{"lost connection", context.Background(), fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"closed pool", context.Background(), puddle.ErrClosedPool, true},
		{"deadline", context.Background(), context.DeadlineExceeded, true},
		{"admin shutdown", context.Background(), &pgconn.PgError{Code: "57P01"}, true},
		{"statement timeout", context.Background(), &pgconn.PgError{Code: "57014"}, true},
		{"disk full", context.Background(), &pgconn.PgError{Code: "53100"}, true},
		{"too many connections", context.Background(), &pgconn.PgError{Code: "53300"}, true},
		{"read-only standby", context.Background(), &pgconn.PgError{Code: "25006"}, true},
		{"deadlock", context.Background(), &pgconn.PgError{Code: "40P01"}, true},
		{"undefined function (schema not migrated)", context.Background(), &pgconn.PgError{Code: "42883"}, false},
		{"raised by a function", context.Background(), &pgconn.PgError{Code: "P0001"}, false},
		{"a scan that does not fit", context.Background(), errors.New("can't scan into dest[0]"), false},
		{"the caller gave up", canceled, fmt.Errorf("query: %w", context.Canceled), false},
	}
	c := &Coordinator{scrub: (&secrets{}).scrub}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.dbError(tc.ctx, "testing", tc.err)
			if got := errors.Is(err, store.ErrUnavailable); got != tc.unavailable {
				t.Fatalf("%v: unavailable %v, want %v", err, got, tc.unavailable)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("%v does not wrap %v", err, tc.err)
			}
		})
	}
	if err := c.dbError(context.Background(), "testing", nil); err != nil {
		t.Fatalf("dbError(nil) = %v", err)
	}
}

func TestDBErrorHidesThePassword(t *testing.T) {
	const password = "hunter2-Secret"
	known := &secrets{}
	known.add(password)
	c := &Coordinator{scrub: known.scrub}
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, cause := range []error{
		fmt.Errorf("connecting to postgres://relay:%s@db.internal/relay: %w", password, dial),
		fmt.Errorf("odd server message about %s", password),
	} {
		err := c.dbError(context.Background(), "testing", cause)
		if !strings.Contains(err.Error(), "xxxxx") {
			t.Errorf("%v: want the password replaced by xxxxx", err)
		}
		wantHidden(t, err, password)
	}
}

// wantHidden fails t when err or any error it wraps shows secret.
func wantHidden(t *testing.T, err error, secret string) {
	t.Helper()
	if err == nil {
		return
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("an error shows the secret: %v", err)
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		wantHidden(t, u.Unwrap(), secret)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			wantHidden(t, e, secret)
		}
	}
}
