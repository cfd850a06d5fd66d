package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/runtime"
)

func cmdAccount(ctx context.Context, args []string, stdio IO) int {
	if len(args) == 0 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay account test -config PATH ADDRESS")
		return 2
	}
	switch args[0] {
	case "test":
		return cmdAccountTest(ctx, args[1:], stdio)
	}
	fmt.Fprintf(stdio.Stderr, "oauthrelay account: unknown subcommand %q (use test)\n", args[0])
	return 2
}

// cmdAccountTest checks one account end to end without sending mail.
func cmdAccountTest(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("account test", stdio)
	path := fs.String("config", "", "configuration file or directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stdio.Stderr, "usage: oauthrelay account test -config PATH ADDRESS")
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{}, stdio)
	if cfg == nil {
		return 1
	}
	address := fs.Arg(0)
	steps := runtime.ProbeAccount(ctx, cfg, address, nil)
	fmt.Fprintf(stdio.Stdout, "account %s\n", strings.ToLower(address))
	ok := true
	for _, s := range steps {
		mark := "ok  "
		if !s.OK {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(stdio.Stdout, "  %s %-8s %s\n", mark, s.Name, s.Detail)
		if !s.OK && s.Fix != "" {
			fmt.Fprintf(stdio.Stdout, "       fix: %s\n", s.Fix)
		}
	}
	if !ok {
		fmt.Fprintf(stdio.Stdout, "FAILED: the relay cannot send as %s yet\n", address)
		return 1
	}
	fmt.Fprintf(stdio.Stdout, "OK: the relay can send as %s (nothing was sent)\n", address)
	return 0
}
