package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/server"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
)

// cmdCheck runs every step `run` performs on the host before it serves —
// the files the configuration names, every secret (Vault logged in and
// read), CA files, listener certificates, and a test bind of every address
// — then releases everything (README "validate and check").
func cmdCheck(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("check", stdio)
	path := fs.String("config", "", "configuration file or directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := loadConfig(*path, config.Overrides{}, stdio)
	if cfg == nil || !checkHostFiles(cfg, stdio) {
		return 1
	}
	failures, relayTests := checkRuntime(ctx, cfg, stdio)
	if len(failures) == 0 {
		failures = checkClientCertificates(ctx, cfg, time.Now(), stdio)
	}
	failures = append(failures, openRelayFailures(relayTests, stdio)...)
	for _, err := range failures {
		printFailure(stdio, err)
	}
	if len(failures) > 0 {
		return 1
	}
	vault := "no Vault"
	if cfg.Vault != nil {
		vault = "Vault reached"
	}
	fmt.Fprintf(stdio.Stdout, "%s: ready to run (%d secret reference(s) resolved, %s, %s bound and released, %s)\n",
		*path, len(cfg.SecretRefs()), vault, boundWords(cfg), openRelaySummary(relayTests))
	return 0
}

// openRelaySummary sums up the self-test that passed: "no open relay"
// only when every listener was proved so.
func openRelaySummary(results []server.OpenRelayResult) string {
	untested := 0
	for _, res := range results {
		if res.Untested {
			untested++
		}
	}
	if untested == 0 {
		return "no open relay"
	}
	return fmt.Sprintf("no open relay found, %d listener(s) not tested by connection", untested)
}

// openRelayFailures prints the open-relay self-test's result for each
// listener that passed and returns the failures.
func openRelayFailures(results []server.OpenRelayResult, stdio IO) []error {
	var errs []error
	for _, res := range results {
		switch {
		case res.OK && res.Untested:
			fmt.Fprintf(stdio.Stdout, "listener %q (%s): not tested by connection: %s\n", res.Listener, res.Address, res.Detail)
			continue
		case res.OK:
			fmt.Fprintf(stdio.Stdout, "listener %q (%s): no open relay: %s\n", res.Listener, res.Address, res.Detail)
			continue
		}
		at := res.At
		errs = append(errs, fmt.Errorf("%s: Open relay: listener %q (%s): %s", config.Position(at), res.Listener, res.Address, res.Detail))
	}
	return errs
}

// boundWords names what check bound: "2 listener(s) and the telemetry
// address", "…, the telemetry address and the console".
func boundWords(cfg *config.Config) string {
	listeners := fmt.Sprintf("%d listener(s)", len(cfg.Listeners))
	telemetry := "the telemetry address"
	if cfg.Telemetry.Address == "" {
		telemetry = "no telemetry address"
	}
	if cfg.Admin == nil {
		return listeners + " and " + telemetry
	}
	what := "its tokens resolved"
	if cfg.Admin.TLS() {
		what = "its tokens and certificate loaded"
	}
	return listeners + ", " + telemetry + " and the console (" + what + ")"
}

// checkHostFiles reads the files the configuration names (CA bundles,
// certificate files), printing a diagnostic for each problem; `run` and
// `check` both go through it.
func checkHostFiles(cfg *config.Config, stdio IO) bool {
	diags := config.CheckHost(cfg)
	for _, d := range diags {
		fmt.Fprintln(stdio.Stderr, config.FormatDiagnostic(d))
	}
	return !diags.HasErrors()
}

// checkRuntime builds the relay as `run` does — Vault login, every secret,
// CA files, token sources, listener certificates — test-binds every
// address, and when all of that passed runs the open-relay self-test on
// every listener (README "Devices"); then it releases everything. The
// console's tokens and certificate are resolved as well.
func checkRuntime(ctx context.Context, cfg *config.Config, stdio IO) ([]error, []server.OpenRelayResult) {
	logging := telemetry.NewLogging(stdio.Stderr, "warn", cfg.Server.LogFormat)
	// NoMigrate: check may run before the relay of a new version starts,
	// beside the old ones; only `run` changes the shared schema.
	r, err := server.New(ctx, cfg, server.Options{Logging: logging, Version: Version, NoMigrate: true})
	if err != nil {
		return append(placeVaultErrors(cfg, splitErrors(err)), testBinds(cfg)...), nil
	}
	defer func() { _ = r.Shutdown(context.Background()) }()
	failures := append(r.CheckListenerTLS(), r.CheckConsole()...)
	failures = append(failures, testBinds(cfg)...)
	if len(failures) > 0 {
		return failures, nil
	}
	return nil, r.OpenRelayTest(ctx)
}

// testBinds binds and closes every address `run` listens on. A port in use
// or a forbidden address fails here rather than at start.
func testBinds(cfg *config.Config) []error {
	var errs []error
	bind := func(addr string, at hcl.Range, what string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: Cannot listen: %s: %w", config.Position(at), what, err))
			return
		}
		ln.Close()
	}
	for _, l := range cfg.Listeners {
		bind(l.Address, l.AddressRange, fmt.Sprintf("listener %q", l.Name))
	}
	if cfg.Telemetry.Address != "" {
		bind(cfg.Telemetry.Address, cfg.Telemetry.AddressRange, "telemetry address")
	}
	if cfg.Admin != nil {
		bind(cfg.Admin.Address, cfg.Admin.AddressRange, "admin address")
	}
	return errs
}

// splitErrors turns a joined error into one error per line.
func splitErrors(err error) []error {
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(line) != "" {
			out = append(out, errors.New(line))
		}
	}
	return out
}

// placeVaultErrors gives errors about Vault that carry no position (a
// refused login, an unreachable server) the vault block's.
func placeVaultErrors(cfg *config.Config, errs []error) []error {
	if cfg.Vault == nil {
		return errs
	}
	at := cfg.Vault.DefRange
	for i, err := range errs {
		msg := err.Error()
		if !position.MatchString(msg) && strings.Contains(strings.ToLower(msg), "vault") {
			errs[i] = fmt.Errorf("%s: %s", config.Position(at), msg)
		}
	}
	return errs
}

// position finds "file:line:col: " inside a message, wherever a layer
// put it.
var position = regexp.MustCompile(`^(.*?)((?:[^\s:]+):\d+:\d+): `)

// printFailure prints a failed step as "file:line:col: summary: detail",
// moving the position to the front when a layer wrapped it, and as
// "summary: detail" when no position is known.
func printFailure(stdio IO, err error) {
	msg := err.Error()
	if m := position.FindStringSubmatch(msg); m != nil && m[1] != "" {
		msg = m[2] + ": " + strings.TrimSuffix(m[1], " ") + " " + msg[len(m[0]):]
	}
	fmt.Fprintln(stdio.Stderr, msg)
}
