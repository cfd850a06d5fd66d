package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// errorTexts is every text err and the errors it wraps give.
func errorTexts(err error) string {
	var b strings.Builder
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		fmt.Fprintf(&b, "%v\n%+v\n", e, e)
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return b.String()
}

// No error of Open shows a password, whatever the form of the DSN, when
// the database cannot be reached or the DSN cannot even be parsed.
func TestErrorsNeverShowThePassword(t *testing.T) {
	const pw = "S3cr3t-Canary-pw"
	const odd = pw + "/:@?# %x" // characters a URI escapes
	const tail = "Pw-Tail"      // the part of a password after an unescaped '@'

	addr := testutil.FreeAddr(t) // nothing listens there
	host, port, _ := net.SplitHostPort(addr)
	fromVault := func(context.Context) (string, string, error) { return "v-relay", pw, nil }
	cases := []struct {
		name        string
		dsn         string
		creds       func(context.Context) (string, string, error)
		unreachable bool // else the DSN is malformed
	}{
		{"URI", "postgres://relay:" + pw + "@" + addr + "/db?sslmode=disable", nil, true},
		{"URI, escaped password", "postgres://" + url.UserPassword("relay", odd).String() + "@" + addr + "/db?sslmode=disable", nil, true},
		{"URI, '@' not escaped", "postgres://relay:" + pw + "@" + tail + "@" + addr + "/db?sslmode=disable", nil, true},
		{"URI, password parameter", "postgresql://relay@" + addr + "/db?sslmode=disable&password=" + url.QueryEscape(odd), nil, true},
		{"key=value", "host=" + host + " port=" + port + " user=relay password=" + pw + " dbname=db sslmode=disable", nil, true},
		{"key=value, quoted", "host=" + host + " port=" + port + " user=relay password='" + pw + " x' dbname=db sslmode=disable", nil, true},
		{"credentials", "postgres://" + addr + "/db?sslmode=disable", fromVault, true},
		{"URI, bad port", "postgres://relay:" + pw + "@" + host + ":notaport/db", nil, false},
		{"URI, broken", "postgres://relay:" + pw + "@[" + host + "/db", nil, false},
		{"key=value, bad port", "host=" + host + " port=abc user=relay password=" + pw, nil, false},
		{"key=value, unterminated quote", "host=" + host + " password='" + pw, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := new(testutil.LogBuffer)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			s, err := Open(ctx, tc.dsn, Options{Logger: logs.Logger(t), Credentials: tc.creds})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("Open: %v", err)
			if got := errors.Is(err, store.ErrUnavailable); got != tc.unreachable {
				t.Errorf("errors.Is(err, store.ErrUnavailable) = %v, want %v", got, tc.unreachable)
			}
			var ce *pgconn.ConnectError
			var pe *pgconn.ParseConfigError
			if errors.As(err, &ce) || errors.As(err, &pe) {
				t.Error("the error wraps pgx's error that holds the connection settings")
			}
			secrets := []string{pw, tail, url.PathEscape(odd), url.QueryEscape(odd)}
			testutil.AssertNoSecrets(t, "the error texts", errorTexts(err), secrets)
			testutil.AssertNoSecrets(t, "the logs", logs.String(), secrets)
		})
	}
}

// While the database refuses connections, writes fail with
// store.ErrUnavailable (the queue listener's 452 4.3.1) and Ping fails;
// when it takes them again, so does the store.
func TestDatabaseGoneAndBack(t *testing.T) {
	srv, dsn := testutil.Postgres(t)
	u, _ := url.Parse(dsn)
	name := strings.TrimPrefix(u.Path, "/")
	s := openTest(t, dsn, Options{})
	ctx := t.Context()
	if err := s.Enqueue(ctx, testMsg("before")); err != nil {
		t.Fatal(err)
	}
	admin := func(sql string) {
		t.Helper()
		if err := srv.Exec("postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	admin("ALTER DATABASE " + name + " ALLOW_CONNECTIONS false")
	admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "'")
	t.Cleanup(func() { _ = srv.Exec("postgres", "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true") })
	calls := map[string]func() error{
		"Enqueue": func() error { return s.Enqueue(ctx, testMsg("during")) },
		"Ping":    func() error { return s.Ping(ctx) },
		"Claim":   func() error { _, err := s.Claim(ctx, "w1", time.Now(), 1, time.Minute, nil); return err },
		"Record": func() error {
			return s.Record(ctx, nil, []*store.Event{{ID: "before", Type: store.EventNotified}})
		},
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while the database refuses connections: %v, want ErrUnavailable", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	admin("ALTER DATABASE " + name + " ALLOW_CONNECTIONS true")
	if err := s.Enqueue(ctx, testMsg("after")); err != nil {
		t.Errorf("Enqueue once the database is back: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping once the database is back: %v", err)
	}
}
