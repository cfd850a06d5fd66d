// Package app implements oauthrelay's command line (README "Running it"):
// run, validate, check, dev, hash-password, account, import-legacy, queue
// and version. cmd/oauthrelay only calls
// Main, so every command can be tested in-process.
package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
)

// Version is set at build time with -ldflags "-X .../internal/app.Version=...".
var Version = "dev"

// IO are the process's standard streams.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// StderrIsTerminal enables source snippets in diagnostics.
	StderrIsTerminal bool
}

const usage = `oauthrelay relays SMTP from local applications to Gmail / Google Workspace and
Microsoft 365 using OAuth2 (XOAUTH2).

Usage:
  oauthrelay run -config PATH [-host H] [-port N] [-global-concurrency N] [-dry-run]
  oauthrelay validate -config PATH     structure only: no other file, no secret, no network
  oauthrelay check -config PATH        on the host: files, secrets, Vault, test-binds listeners
  oauthrelay dev [-listen ADDR] [-telemetry ADDR]
  oauthrelay hash-password [-algorithm bcrypt|argon2id] [-cost N] < password
  oauthrelay account test -config PATH ADDRESS
  oauthrelay account authorize -config PATH [-method device|browser] ADDRESS
  oauthrelay import-legacy [-vault-prefix MOUNT/PATH] [-out FILE] accounts.json
  oauthrelay queue list|show|retry|hold|release|delete -config PATH [-json] [ID...|-all]
  oauthrelay version

PATH is an HCL file or a directory of *.hcl files.
`

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	if len(args) == 0 {
		fmt.Fprint(stdio.Stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdio)
	case "validate":
		return cmdValidate(rest, stdio)
	case "check":
		return cmdCheck(ctx, rest, stdio)
	case "dev":
		return cmdDev(ctx, rest, stdio)
	case "hash-password":
		return cmdHashPassword(rest, stdio)
	case "account":
		return cmdAccount(ctx, rest, stdio)
	case "import-legacy":
		return cmdImportLegacy(ctx, rest, stdio)
	case "queue":
		return cmdQueue(ctx, rest, stdio)
	case "version", "-version", "--version":
		fmt.Fprintf(stdio.Stdout, "oauthrelay %s\n", Version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdio.Stdout, usage)
		return 0
	}
	fmt.Fprintf(stdio.Stderr, "oauthrelay: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func newFlagSet(name string, stdio IO) *flag.FlagSet {
	fs := flag.NewFlagSet("oauthrelay "+name, flag.ContinueOnError)
	fs.SetOutput(stdio.Stderr)
	return fs
}

// loadConfig reads and validates the configuration, printing every
// diagnostic; it returns nil when there are errors. It reads no file but
// the configuration's own: checkHostFiles does that for run and check.
func loadConfig(path string, ov config.Overrides, stdio IO) *config.Config {
	if path == "" {
		fmt.Fprintln(stdio.Stderr, "oauthrelay: -config is required (a file or a directory of *.hcl files)")
		return nil
	}
	loaded := config.Load(path, ov)
	_ = loaded.WriteDiagnostics(stdio.Stderr, stdio.StderrIsTerminal, 100)
	return loaded.Config
}

func cmdValidate(args []string, stdio IO) int {
	fs := newFlagSet("validate", stdio)
	path := fs.String("config", "", "configuration file or directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{}, stdio)
	if cfg == nil {
		return 1
	}
	fmt.Fprintf(stdio.Stdout, "%s: valid (%d listener(s), %d provider(s), %d group(s), %d account(s), %d client(s))\n",
		*path, len(cfg.Listeners), len(cfg.Providers), len(cfg.Groups), len(cfg.Accounts()), len(cfg.Clients()))
	return 0
}

func cmdRun(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("run", stdio)
	path := fs.String("config", "", "configuration file or directory")
	host := fs.String("host", "", "override the host of the first listener")
	port := fs.Int("port", 0, "override the port of the first listener")
	conc := fs.Int("global-concurrency", 0, "cap on concurrent client sessions (0: from the config)")
	dryRun := fs.Bool("dry-run", false, "authenticate upstream and reset instead of sending; reply 250 \"dry run\"")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{Host: *host, Port: *port, GlobalConcurrency: *conc, DryRun: *dryRun}, stdio)
	if cfg == nil || !checkHostFiles(cfg, stdio) {
		return 1
	}
	logging := telemetry.NewLogging(stdio.Stderr, cfg.Server.LogLevel, cfg.Server.LogFormat)
	log := logging.Logger()
	ctx, stop := signalContext(ctx, log.Warn)
	defer stop()
	opts := server.Options{
		Logging:    logging,
		ConfigPath: *path,
		Overrides:  config.Overrides{Host: *host, Port: *port, GlobalConcurrency: *conc, DryRun: *dryRun},
		Version:    Version,
		Reload:     hangups(ctx),
	}
	if err := server.Run(ctx, cfg, opts); err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	return 0
}

// hangups turns SIGHUP into reload requests until ctx ends.
func hangups(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-sig:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits at once.
func signalContext(parent context.Context, warn func(string, ...any)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			warn("signal received; draining sessions (send it again to exit at once)", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			warn("second signal; exiting now", "signal", sig.String())
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() { signal.Stop(ch); close(done); cancel() }
}
