package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// pty is a pseudo-terminal: the program under test uses the terminal end,
// the test types into and reads the screen from the controller end.
type pty struct {
	controller *os.File
	terminal   *os.File
	terminalFd int
	screen     *testutil.LogBuffer // everything the terminal displayed
	drained    chan struct{}
}

// openPTY opens /dev/ptmx and its terminal end, and records everything the
// terminal displays until the test ends.
func openPTY(t *testing.T) *pty {
	t.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	var unlock int32
	var number uint32
	if err := ioctl(controller, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	if err := ioctl(controller, syscall.TIOCGPTN, unsafe.Pointer(&number)); err != nil {
		t.Fatalf("numbering the pseudo-terminal: %v", err)
	}
	name := fmt.Sprintf("/dev/pts/%d", number)
	// Opened blocking, like a process's inherited stdin, which is what
	// term.ReadPassword expects.
	fd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening %s: %v", name, err)
	}
	p := &pty{controller: controller, terminal: os.NewFile(uintptr(fd), name), terminalFd: fd, screen: &testutil.LogBuffer{}, drained: make(chan struct{})}
	go func() {
		defer close(p.drained)
		buf := make([]byte, 1024)
		for {
			n, err := controller.Read(buf)
			p.screen.Write(buf[:n])
			if err != nil {
				return // EIO once the terminal end is closed
			}
		}
	}()
	t.Cleanup(func() {
		p.terminal.Close()
		controller.Close()
	})
	return p
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// echoOff reports whether the terminal currently does not echo input.
func (p *pty) echoOff() bool {
	var tio syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(p.terminalFd), syscall.TCGETS, uintptr(unsafe.Pointer(&tio)))
	return errno == 0 && tio.Lflag&syscall.ECHO == 0
}

// typeAfterPrompt waits, as a person would, until prompt is displayed and
// the terminal is reading without echo, then types line and Enter.
func (p *pty) typeAfterPrompt(t *testing.T, prompt, line string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("the prompt %q with echo off", prompt), func() bool {
		return strings.Contains(p.screen.String(), prompt) && p.echoOff()
	})
	if _, err := p.controller.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// screenAfterExit closes the terminal end once the program has finished and
// returns everything the terminal displayed.
func (p *pty) screenAfterExit(t *testing.T) string {
	t.Helper()
	p.terminal.Close()
	select {
	case <-p.drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the pseudo-terminal's output did not end")
	}
	return p.screen.String()
}

func TestHashPasswordOnTerminal(t *testing.T) {
	const pw = "typed-secret-Pa55"
	for _, tc := range []struct {
		name     string
		repeat   string
		wantCode int
	}{
		{"same password twice", pw, 0},
		{"the two differ", pw + "-typo", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := openPTY(t)
			var stdout bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- Main(context.Background(), []string{"hash-password", "-cost", "4"}, IO{Stdin: p.terminal, Stdout: &stdout, Stderr: p.terminal})
			}()
			p.typeAfterPrompt(t, "Password: ", pw)
			p.typeAfterPrompt(t, "Repeat password: ", tc.repeat)
			var code int
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("hash-password did not finish")
			}
			screen := p.screenAfterExit(t)
			testutil.AssertNoSecrets(t, "the terminal", screen, []string{pw, tc.repeat})
			testutil.AssertNoSecrets(t, "standard output", stdout.String(), []string{pw, tc.repeat})
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; terminal showed %q", code, tc.wantCode, screen)
			}
			if code == 0 {
				if err := passwd.Verify(strings.TrimSpace(stdout.String()), pw); err != nil {
					t.Errorf("printed hash does not verify: %v", err)
				}
				return
			}
			if stdout.Len() != 0 {
				t.Errorf("a mismatch printed %q", stdout.String())
			}
			if !strings.Contains(screen, "the two passwords differ; nothing was hashed") {
				t.Errorf("no clear message for the mismatch; terminal showed %q", screen)
			}
		})
	}
}
