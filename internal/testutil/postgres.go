package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PostgresServer is a real PostgreSQL server from Debian's packages
// (initdb in a temporary directory, listening on 127.0.0.1 only), the way
// StartVault runs a real Vault. Tests share one server per test binary
// and get a fresh database each (Postgres).
type PostgresServer struct {
	Addr    string // 127.0.0.1:port
	User    string // the superuser (trust authentication on loopback, unless Password)
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *LogBuffer
	cred    *syscall.Credential
	stopped bool

	// Password is the superuser's password when the server was started
	// with PostgresOptions.Password; empty for trust authentication.
	Password string
}

// PostgresOptions tune a server started by StartPostgresServer.
type PostgresOptions struct {
	// Durable keeps fsync on (benchmarks); tests turn it off: they kill
	// relay processes, never the database server.
	Durable bool
	// MaxConnections is the server's max_connections (default 200).
	MaxConnections int
	// Password, when set, is the superuser's password, and TCP logins
	// (127.0.0.1) need a password checked with scram-sha-256, so that
	// tests see wrong or expired passwords (VALID UNTIL) refused. The
	// Unix socket in the server's directory keeps trust authentication.
	Password string
	// PasswordAuth makes every role but the superuser log in over TCP with
	// its scram-sha-256 password, so that a test can tell a right password
	// from a wrong one; the superuser keeps trust (Exec needs none).
	PasswordAuth bool
}

// PostgresBinDir finds the directory of initdb and postgres: $PG_BIN, the
// newest /usr/lib/postgresql/*/bin (Debian's postgresql package), or PATH.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL is not installed: apt-get install postgresql (.ci/run does), or set PG_BIN")
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// StartPostgresServer runs initdb in a new temporary directory and starts
// the server on a free loopback port. As root it runs them as the
// "postgres" user (PostgreSQL refuses to run as root). The caller stops
// it with Stop.
func StartPostgresServer(opts PostgresOptions) (*PostgresServer, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{log: &LogBuffer{}, User: "postgres", Password: opts.Password}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user of Debian's package: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if s.dir, err = os.MkdirTemp("", "oauthrelay-pg-"); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			s.removeDir()
			return nil, err
		}
	}
	data := filepath.Join(s.dir, "data")
	if err := s.initdb(bin, data, opts); err != nil {
		s.removeDir()
		return nil, err
	}
	if opts.PasswordAuth {
		if err := s.requirePasswords(data); err != nil {
			s.removeDir()
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		err := s.run(bin, data, opts)
		if err == nil {
			return s, nil
		}
		if attempt == 5 {
			s.removeDir()
			return nil, fmt.Errorf("postgres did not start: %v\n%s", err, s.log.String())
		}
	}
}

// initdb creates the data directory: trust authentication, or with a
// password scram-sha-256 over TCP (the password handed over in a file
// the postgres user can read, never on the command line).
func (s *PostgresServer) initdb(bin, data string, opts PostgresOptions) error {
	args := []string{"-D", data, "-U", s.User, "--encoding=UTF8", "--locale=C", "--no-instructions"}
	if opts.Password == "" {
		args = append(args, "--auth=trust")
	} else {
		pwfile := filepath.Join(s.dir, "pwfile")
		if err := os.WriteFile(pwfile, []byte(opts.Password+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pwfile)
		if s.cred != nil {
			if err := os.Chown(pwfile, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
		args = append(args, "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwfile)
	}
	if !opts.Durable {
		args = append(args, "--no-sync")
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

// requirePasswords replaces initdb's pg_hba.conf (trust for everyone): the
// superuser is trusted on loopback, every other role needs its password.
func (s *PostgresServer) requirePasswords(data string) error {
	hba := filepath.Join(data, "pg_hba.conf")
	rules := fmt.Sprintf("local all all trust\nhost all %[1]s 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n", s.User)
	if err := os.WriteFile(hba, []byte(rules), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(hba, int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

// run starts the server on a free port and waits until it accepts
// connections; the port can be taken between choosing and binding it, so
// the caller tries again on an error.
func (s *PostgresServer) run(bin, data string, opts PostgresOptions) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	maxConns := opts.MaxConnections
	if maxConns == 0 {
		maxConns = 200
	}
	args := []string{"-D", data, "-p", port,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + s.dir,
		"-c", "max_connections=" + strconv.Itoa(maxConns),
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
	}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	// Pdeathsig: a test binary that dies without stopping the server
	// takes it along instead of leaving it running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited, s.Addr = cmd, exited, "127.0.0.1:"+port
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			if s.ready() {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the server exited (port %s taken?)", port)
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return errors.New("not accepting connections after a minute")
		}
		time.Sleep(50 * time.Millisecond) // polling the server's port
	}
}

// ready asks the server itself with pg_isready, which also waits out the
// "starting up" phase in which the port is open but logins fail.
func (s *PostgresServer) ready() bool {
	bin, err := PostgresBinDir()
	if err != nil {
		return false
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	return exec.Command(filepath.Join(bin, "pg_isready"), "-q", "-h", host, "-p", port, "-U", s.User).Run() == nil
}

// DSN is a connection string for database db as the superuser, with
// the password when the server has one.
func (s *PostgresServer) DSN(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(s.User), Host: s.Addr, Path: "/" + db, RawQuery: "sslmode=disable"}
	if s.Password != "" {
		u.User = url.UserPassword(s.User, s.Password)
	}
	return u.String()
}

// Exec runs SQL as the superuser with psql (the tests' admin channel: it
// needs no driver in the test, and its errors are PostgreSQL's own).
func (s *PostgresServer) Exec(db, sql string) error {
	_, err := s.QueryAs(s.User, s.Password, db, sql)
	return err
}

// QueryAs runs SQL with psql as user over TCP, giving password when the
// server asks for one (PasswordAuth), and returns the rows it printed,
// unaligned, without headers.
func (s *PostgresServer) QueryAs(user, password, db, sql string) (string, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return "", err
	}
	psql := filepath.Join(bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command(psql, "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user, "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGPASSFILE="+os.DevNull)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("psql as %s: %v: %s", user, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// CreateDatabase creates a new, empty database with a random name.
func (s *PostgresServer) CreateDatabase() (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	return name, s.Exec("postgres", "CREATE DATABASE "+name)
}

// DropDatabase drops a database, ending its sessions first.
func (s *PostgresServer) DropDatabase(name string) error {
	return s.Exec("postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

// Log is the server's output.
func (s *PostgresServer) Log() string { return s.log.String() }

// Stop shuts the server down and removes its directory.
func (s *PostgresServer) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.kill()
	s.removeDir()
}

func (s *PostgresServer) kill() {
	if s.cmd == nil {
		return
	}
	// SIGQUIT: immediate shutdown; the data directory is thrown away.
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func (s *PostgresServer) removeDir() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

var shared struct {
	once sync.Once
	srv  *PostgresServer
	err  error
}

// Postgres returns a fresh, empty database on the test binary's shared
// PostgreSQL server (started on first use), dropped when the test ends.
// Tests fail, never skip, when PostgreSQL is missing: CI installs it. A
// package that uses it stops the server in TestMain with
// StopSharedPostgres (else the server dies with the test binary).
func Postgres(t testing.TB) (srv *PostgresServer, dsn string) {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = StartPostgresServer(PostgresOptions{}) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	name, err := shared.srv.CreateDatabase()
	if err != nil {
		t.Fatalf("create database: %v\n%s", err, shared.srv.Log())
	}
	t.Cleanup(func() {
		if err := shared.srv.DropDatabase(name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return shared.srv, shared.srv.DSN(name)
}

// StopSharedPostgres stops the server Postgres started, if any; call it
// from TestMain after m.Run.
func StopSharedPostgres() {
	if shared.srv != nil {
		shared.srv.Stop()
	}
}
