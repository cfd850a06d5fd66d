package app

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
)

// cmdHashPassword prints a password_hash for a client block. On a terminal
// it asks twice without echo; otherwise it reads one line, for scripts.
func cmdHashPassword(args []string, stdio IO) int {
	fs := newFlagSet("hash-password", stdio)
	alg := fs.String("algorithm", passwd.Bcrypt, "bcrypt or argon2id")
	cost := fs.Int("cost", passwd.DefaultBcryptCost, fmt.Sprintf("bcrypt cost (%d-%d; below %d is weak)", passwd.MinBcryptCost, passwd.MaxBcryptCost, passwd.WeakBcryptCost))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stdio.Stderr, "oauthrelay hash-password: "+format+"\n", a...)
		return 1
	}
	costSet := false
	fs.Visit(func(f *flag.Flag) { costSet = costSet || f.Name == "cost" })
	// Settings are checked before the password is asked for, so nobody
	// types a password only to have it refused.
	if err := checkHashSettings(*alg, *cost, costSet, stdio.Stderr); err != nil {
		return fail("%v", err)
	}
	pw, err := readNewPassword(stdio)
	if err != nil {
		return fail("%v", err)
	}
	h, err := passwd.Hash(*alg, pw, *cost)
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(stdio.Stdout, h)
	return 0
}

// checkHashSettings refuses what cannot give a sound hash and warns about
// what gives a weak one. argon2id's parameters are fixed in passwd above
// the OWASP minimum, so only bcrypt's cost needs checking.
func checkHashSettings(alg string, cost int, costSet bool, stderr io.Writer) error {
	switch alg {
	case passwd.Argon2id:
		if costSet {
			fmt.Fprintln(stderr, "oauthrelay hash-password: warning: -cost applies to bcrypt only; ignored for argon2id")
		}
		return nil
	case passwd.Bcrypt:
	default:
		return fmt.Errorf("unknown algorithm %q (use %s or %s)", alg, passwd.Bcrypt, passwd.Argon2id)
	}
	if err := passwd.CheckBcryptCost(cost); err != nil {
		return err
	}
	if cost < passwd.WeakBcryptCost {
		fmt.Fprintf(stderr, "oauthrelay hash-password: warning: bcrypt cost %d is weak; use %d or more (default %d)\n", cost, passwd.WeakBcryptCost, passwd.DefaultBcryptCost)
	}
	return nil
}

// readNewPassword reads the password from a terminal (twice, no echo) or
// one line from a pipe or file.
func readNewPassword(stdio IO) (string, error) {
	var pw string
	var err error
	if fd, ok := terminalFd(stdio.Stdin); ok {
		pw, err = promptTwice(fd, stdio.Stderr)
	} else {
		pw, err = readLine(stdio.Stdin)
	}
	if err == nil && pw == "" {
		err = errors.New("empty password; type it when asked, or pipe it: printf '%s\\n' \"$PASSWORD\" | oauthrelay hash-password")
	}
	return pw, err
}

// terminalFd reports whether r is a terminal, and its descriptor.
func terminalFd(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// promptTwice asks for the password and its confirmation with echo off, as
// passwd(1) does, so it is neither shown nor left in the scrollback.
func promptTwice(fd int, prompts io.Writer) (string, error) {
	first, err := promptNoEcho(fd, prompts, "Password: ")
	if err != nil || first == "" {
		return first, err
	}
	second, err := promptNoEcho(fd, prompts, "Repeat password: ")
	if err != nil {
		return "", err
	}
	if first != second {
		return "", errors.New("the two passwords differ; nothing was hashed")
	}
	return first, nil
}

func promptNoEcho(fd int, prompts io.Writer, prompt string) (string, error) {
	io.WriteString(prompts, prompt)
	b, err := term.ReadPassword(fd)
	// The Enter key was not echoed either: end the prompt's line.
	io.WriteString(prompts, "\n")
	if err != nil {
		return "", fmt.Errorf("reading the password from the terminal: %w", err)
	}
	return string(b), nil
}

func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
