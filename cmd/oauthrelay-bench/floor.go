package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"
)

// The floor rows measure the least any server can do for the bench's
// clients: an SMTP server in the bench process that takes AUTH PLAIN,
// reads each message and answers 250, at once or only after the message
// was written to a file and fdatasync'd (many messages sharing one
// fdatasync, as the queue's commits do). Their ratio, in the same run,
// is what an fsync before every 250 costs on this machine with these
// clients, apart from anything else a server does: it tells the disk's
// share of the queue's accept row from the relay's own.
const (
	floorName       = "floor: bare SMTP server, 250 at once"
	floorSyncedName = "floor: bare SMTP server, fdatasync'd before 250"
)

// floorLogSize is the size of the file the fsync'd floor writes in a
// ring. It is written once before the clock starts so that an fdatasync
// flushes data only, as for SQLite's WAL, which is reused from its
// beginning after each checkpoint: a growing file would make every
// fdatasync commit the file system's journal too.
const floorLogSize = 16 << 20

type floorServer struct {
	srv  *smtp.Server
	ln   net.Listener
	log  *groupLog // nil: 250 at once
	addr string
}

// startFloor starts the bare server on loopback; logPath "" answers at
// once, else each message is written to logPath and synced first.
func startFloor(logPath string) (*floorServer, error) {
	f := &floorServer{}
	if logPath != "" {
		l, err := openGroupLog(logPath, floorLogSize)
		if err != nil {
			return nil, err
		}
		f.log = l
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.close()
		return nil, err
	}
	f.ln, f.addr = ln, ln.Addr().String()
	f.srv = smtp.NewServer(floorBackend{f})
	f.srv.Domain = "floor.local"
	f.srv.AllowInsecureAuth = true // loopback only
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

func (f *floorServer) close() {
	if f.srv != nil {
		f.srv.Close()
	}
	if f.ln != nil {
		f.ln.Close() // in case Serve had not taken it yet
	}
	if f.log != nil {
		f.log.close()
	}
}

type floorBackend struct{ f *floorServer }

func (b floorBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &floorSession{f: b.f}, nil
}

type floorSession struct {
	f     *floorServer
	authd bool
}

func (s *floorSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *floorSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "bench" || pass != password {
			return errors.New("invalid credentials")
		}
		s.authd = true
		return nil
	}), nil
}

func (s *floorSession) Mail(string, *smtp.MailOptions) error {
	if !s.authd {
		// RFC 4954 §6, as the relay answers.
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}

func (s *floorSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (s *floorSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.f.log == nil {
		return nil
	}
	return s.f.log.append(msg)
}

func (s *floorSession) Reset()        {}
func (s *floorSession) Logout() error { return nil }

// groupLog writes what append is given to a file and returns once it is
// fdatasync'd; appends that arrive while a sync runs share the next one.
type groupLog struct {
	file *os.File
	size int64

	// syncData makes the file's data durable (fdatasync; tests replace it).
	syncData func() error

	mu sync.Mutex
	// work wakes the sync loop; durable wakes the appends waiting for
	// their sync (two conditions, so that an append does not wake the
	// others that wait).
	work, durable *sync.Cond
	pending       []byte
	queued        uint64 // appends taken so far
	synced        uint64 // appends durable so far
	syncs         uint64 // fdatasyncs made
	err           error
	closed        bool
	done          chan struct{}
}

func openGroupLog(path string, size int64) (*groupLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(make([]byte, size)); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	l := &groupLog{file: f, size: size, done: make(chan struct{})}
	l.syncData = l.fdatasync
	l.work, l.durable = sync.NewCond(&l.mu), sync.NewCond(&l.mu)
	go l.syncLoop()
	return l, nil
}

func (l *groupLog) append(p []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.err != nil {
		return errors.Join(errors.New("floor log closed"), l.err)
	}
	l.pending = append(l.pending, p...)
	l.queued++
	mine := l.queued
	l.work.Signal()
	for l.synced < mine && l.err == nil && !l.closed {
		l.durable.Wait()
	}
	if l.synced < mine {
		return errors.Join(errors.New("floor log: not synced"), l.err)
	}
	return nil
}

func (l *groupLog) syncLoop() {
	defer close(l.done)
	var buf []byte
	var off int64
	for {
		l.mu.Lock()
		for len(l.pending) == 0 && !l.closed {
			l.work.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return
		}
		buf, l.pending = l.pending, buf[:0]
		upTo := l.queued
		l.mu.Unlock()

		err := l.writeAt(buf, &off)
		l.mu.Lock()
		if err != nil {
			l.err = err
		} else {
			l.synced = upTo
			l.syncs++
		}
		l.durable.Broadcast()
		l.mu.Unlock()
	}
}

// writeAt writes buf at *off, going round the file, and syncs its data.
func (l *groupLog) writeAt(buf []byte, off *int64) error {
	for len(buf) > 0 {
		if *off >= l.size {
			*off = 0
		}
		n := min(int64(len(buf)), l.size-*off)
		if _, err := l.file.WriteAt(buf[:n], *off); err != nil {
			return err
		}
		*off += n
		buf = buf[n:]
	}
	return l.syncData()
}

func (l *groupLog) fdatasync() error {
	for {
		err := unix.Fdatasync(int(l.file.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("fdatasync: %w", err)
			}
			return nil
		}
	}
}

// failed returns the error that stopped the log, if any.
func (l *groupLog) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// counts returns the appends made durable and the fdatasyncs it took.
func (l *groupLog) counts() (appends, syncs uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced, l.syncs
}

func (l *groupLog) close() {
	l.mu.Lock()
	l.closed = true
	l.work.Broadcast()
	l.durable.Broadcast()
	l.mu.Unlock()
	<-l.done
	l.file.Close()
}

// floorResult is the floor rows' comparison (the rows themselves are in
// the report's scenarios).
type floorResult struct {
	// SyncCost is the fsync'd floor's rate over the floor answering at
	// once; SyncedToDirectMode its rate over the relay in direct mode.
	SyncCost           float64 `json:"synced_to_unsynced_ratio"`
	SyncedToDirectMode float64 `json:"synced_to_relay_direct_mode_ratio"`
	MsgsPerSync        float64 `json:"msgs_per_fdatasync"`
}

// floorRows measures the bare server both ways with the relay's clients.
func (b *bench) floorRows(provider, directMode scenario) (*floorResult, error) {
	rows := make([]scenario, 0, 2)
	var perSync float64
	for _, name := range []string{floorName, floorSyncedName} {
		logPath := ""
		if name == floorSyncedName {
			logPath = filepath.Join(b.dir, "floor.log")
		}
		f, err := startFloor(logPath)
		if err != nil {
			return nil, err
		}
		var appends0, syncs0 uint64
		row := measureAfter(name, b.clients, b.duration, nil, b.relayClient(f.addr), func() {
			if f.log != nil {
				appends0, syncs0 = f.log.counts()
			}
		})
		var logErr error
		if f.log != nil {
			appends, syncs := f.log.counts()
			if syncs > syncs0 {
				perSync = float64(appends-appends0) / float64(syncs-syncs0)
			}
			logErr = f.log.failed()
		}
		f.close()
		if logErr != nil || row.Errors > 0 || row.PerSecond == 0 {
			return nil, fmt.Errorf("%s: %d errors, %.0f msgs/s: %v", name, row.Errors, row.PerSecond, logErr)
		}
		row.RelayRatio = row.PerSecond / provider.PerSecond
		row.ModeRatio = row.PerSecond / directMode.PerSecond
		rows = append(rows, row)
	}
	b.rep.Scenarios = append(b.rep.Scenarios, rows...)
	return &floorResult{SyncCost: rows[1].PerSecond / rows[0].PerSecond, SyncedToDirectMode: rows[1].ModeRatio, MsgsPerSync: perSync}, nil
}

func printFloor(f floorResult) {
	fmt.Printf("\nfloor rows: a bare SMTP server in the bench process (AUTH PLAIN, reads the message, 250), the relay's clients; fdatasync'd before each 250 it keeps %.2f× its rate (%.1f messages per fdatasync; the 16 clients wait for their syncs): what a durable 250 costs a server that does nothing else; fdatasync'd it runs at %.2f× the relay in direct mode\n",
		f.SyncCost, f.MsgsPerSync, f.SyncedToDirectMode)
}
