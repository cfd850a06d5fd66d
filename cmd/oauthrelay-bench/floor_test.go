package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The fsync'd floor answers 250 only for messages its file holds, and
// messages sent at once share fdatasyncs.
func TestFloorSyncsBeforeItAnswers(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(map[bool]string{false: "at once", true: "synced"}[synced], func(t *testing.T) {
			logPath := ""
			if synced {
				logPath = filepath.Join(t.TempDir(), "floor.log")
			}
			f, err := startFloor(logPath)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.close)
			const clients, each = 8, 5
			send := relayPath(f.addr).reuse
			var wg sync.WaitGroup
			errs := make(chan error, clients*each)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := &clientState{}
					defer st.close()
					for range each {
						errs <- send(st)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if !synced {
				return
			}
			appends, syncs := f.log.counts()
			if appends != clients*each || syncs < 1 || syncs > appends {
				t.Fatalf("appends %d, fdatasyncs %d; want %d appends in 1..%[3]d syncs", appends, syncs, clients*each)
			}
			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(data, []byte("A short benchmark message body.")); n != clients*each {
				t.Fatalf("the file holds %d messages, want %d", n, clients*each)
			}
			if int64(len(data)) != floorLogSize {
				t.Fatalf("the file is %d bytes, want its preallocated %d (written in a ring)", len(data), floorLogSize)
			}
		})
	}
}

// Without AUTH the floor refuses MAIL, as the relay does.
func TestFloorNeedsAuth(t *testing.T) {
	f, err := startFloor("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	c, err := smtp.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Mail(account, nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 530 {
		t.Fatalf("MAIL without AUTH: %v, want 530", err)
	}
}

// The ring goes round: writes past the end continue at the start, and
// the file keeps its size.
func TestGroupLogWrapsAround(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ring")
	l, err := openGroupLog(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"abcdef", "ghijkl", "mn"} {
		if err := l.append([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "klmnefghij" {
		t.Fatalf("ring holds %q, want %q", data, "klmnefghij")
	}
	if err := l.append([]byte("x")); err == nil {
		t.Fatal("append after close succeeded")
	}
}

// An append returns only after the sync of its bytes: while the sync is
// held, it waits; a failed sync fails it and every later append.
func TestGroupLogAnswersAfterTheSync(t *testing.T) {
	l, err := openGroupLog(filepath.Join(t.TempDir(), "ring"), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	entered, release := make(chan struct{}), make(chan error)
	l.syncData = func() error {
		entered <- struct{}{}
		return <-release
	}
	done := make(chan error, 1)
	go func() { done <- l.append([]byte("first")) }()
	<-entered
	select {
	case err := <-done:
		t.Fatalf("append returned (%v) while its sync was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	release <- errors.New("disk gone")
	if err := <-done; err == nil {
		t.Fatal("append succeeded although its sync failed")
	}
	if err := l.append([]byte("second")); err == nil {
		t.Fatal("append after a failed sync succeeded")
	}
	if l.failed() == nil {
		t.Fatal("the failure was not kept")
	}
}
