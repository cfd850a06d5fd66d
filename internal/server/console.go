package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/admin"
	"github.com/oauthrelay/oauthrelay/internal/config"
)

// console is the operator console's listener (README "Operator
// console"): the admin API and the web dashboard on an address of their
// own. It is opened at Start, moved by a reload that changes its address,
// and closed first at shutdown. Turning TLS on or off keeps the socket:
// each connection is served by the setting current when it arrives.
type console struct {
	address string
	ln      *consoleListener
	srv     *http.Server
}

var errNoConfigFile = errors.New("the relay was started without a configuration file to reload")

// consoleTLS builds the console's TLS configuration from b (nil: plain
// HTTP), as a listener's with tls_mode = "implicit".
func (r *Runtime) consoleTLS(b *built) (*tls.Config, error) {
	a := b.cfg.Admin
	if !a.TLS() {
		return nil, nil
	}
	lc := &config.Listener{
		TLSMode:     config.TLSImplicit,
		TLSCertFile: a.TLSCertFile, TLSKeyFile: a.TLSKeyFile, TLSCert: a.TLSCert, TLSKey: a.TLSKey,
	}
	return loadListenerTLS(lc, b.store.Get, r.log.Named("admin"))
}

// consoleTokensOf resolves the console's bearer tokens from b's secrets.
// Errors name the references, never a value; they are tokenErrors.
func consoleTokensOf(b *built) (admin.Tokens, error) {
	a := b.cfg.Admin
	if a == nil {
		return admin.Tokens{}, errors.New("the configuration has no admin block")
	}
	var t admin.Tokens
	for _, tok := range []struct {
		name string
		ref  config.SecretRef
		dst  *string
	}{{"read_token", a.ReadToken, &t.Read}, {"admin_token", a.AdminToken, &t.Admin}} {
		if !tok.ref.IsSet() {
			continue
		}
		v, err := b.store.Get(tok.ref)
		if err != nil {
			return admin.Tokens{}, tokenError{tok.ref, fmt.Errorf("admin %s: %w", tok.name, err)}
		}
		if len(v) < config.MinAdminTokenLength {
			return admin.Tokens{}, tokenError{tok.ref, fmt.Errorf("admin %s (%s) is shorter than %d characters", tok.name, tok.ref, config.MinAdminTokenLength)}
		}
		*tok.dst = v
	}
	if t.Read != "" && t.Read == t.Admin {
		return admin.Tokens{}, tokenError{a.ReadToken, fmt.Errorf("admin read_token (%s) and admin_token (%s) hold the same value: every reader could act as an admin", a.ReadToken, a.AdminToken)}
	}
	return t, nil
}

// tokenError is a console token that cannot be used, with its reference
// (where `check` places the error).
type tokenError struct {
	ref config.SecretRef
	err error
}

func (e tokenError) Error() string { return e.err.Error() }
func (e tokenError) Unwrap() error { return e.err }

// CheckConsole resolves the console's tokens and certificate as a start
// would, for `oauthrelay check`; each error is placed at file:line:col.
func (r *Runtime) CheckConsole() []error {
	b := r.current.Load()
	a := b.cfg.Admin
	if a == nil {
		return nil
	}
	var errs []error
	place := func(at hcl.Range, err error) {
		errs = append(errs, fmt.Errorf("%s: %w", config.Position(at), err))
	}
	if _, err := consoleTokensOf(b); err != nil {
		at := a.DefRange
		var te tokenError
		if errors.As(err, &te) && te.ref.Range.Filename != "" {
			at = te.ref.Range
		}
		place(at, err)
	}
	if _, err := r.consoleTLS(b); err != nil {
		at := a.DefRange
		if a.TLSCert.IsSet() {
			at = a.TLSCert.Range
		}
		place(at, err)
	}
	return errs
}

// consoleTokens are the current configuration's tokens, read at each
// request: a rotation in Vault applies without a reload.
func (r *Runtime) consoleTokens() (admin.Tokens, error) {
	return consoleTokensOf(r.current.Load())
}

// openConsole binds the console's address and prepares its server; serve
// starts it. Every console of the runtime serves the one admin.Server, so
// its sessions and login throttle survive a move.
func (r *Runtime) openConsole(b *built, tlsCfg *tls.Config) (*console, error) {
	a := b.cfg.Admin
	ln, err := net.Listen("tcp", a.Address)
	if err != nil {
		return nil, r.consoleBindError(a.Address, err)
	}
	c := &console{address: a.Address, ln: newConsoleListener(ln, tlsCfg)}
	log := r.log.Named("admin")
	c.srv = &http.Server{
		Handler:           r.consoleHandler(log),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ConnState:         c.ln.connState,
		ErrorLog:          log.StandardLogger(nil),
	}
	return c, nil
}

// consoleHandler is the runtime's one console handler, made at first use.
func (r *Runtime) consoleHandler(log hclog.Logger) http.Handler {
	if r.adminHandler == nil {
		r.adminHandler = admin.New(consoleBackend{r}, admin.Options{
			Tokens: r.consoleTokens,
			Hosts:  r.consoleHostnames,
			Log:    log,
		}).Handler()
	}
	return r.adminHandler
}

// consoleHostnames are the current configuration's extra console names.
func (r *Runtime) consoleHostnames() []string {
	if a := r.current.Load().cfg.Admin; a != nil {
		return a.Hostnames
	}
	return nil
}

// consoleBindError explains a failed bind. A reload that moves the console
// to another host on the port it listens on cannot bind the new socket
// before the old one closes (and closing first would leave no console if
// the bind then failed).
func (r *Runtime) consoleBindError(address string, err error) error {
	if r.console == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("admin address %s: %w", address, err)
	}
	if bound := r.console.ln.Addr().String(); samePort(bound, address) {
		return fmt.Errorf("admin address %s: the console listens on %s, the same port: a reload cannot move it to another host on one port; choose another port, or restart the relay", address, bound)
	}
	return fmt.Errorf("admin address %s: %w", address, err)
}

func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb && pa != "0"
}

// serves reports whether the console is bound to address: written as in
// its configuration, or as bound (a port 0 made concrete).
func (c *console) serves(address string) bool {
	return address == c.address || address == c.ln.Addr().String()
}

func (c *console) serve() {
	go func() { _ = c.srv.Serve(c.ln) }()
}

func (c *console) close() {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.srv.Shutdown(ctx); err != nil {
		_ = c.srv.Close()
	}
}

// ConsoleAddr is the console's bound address (nil without one).
func (r *Runtime) ConsoleAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.console == nil {
		return nil
	}
	return r.console.ln.Addr()
}

// startConsole opens the console of the starting configuration, if any.
func (r *Runtime) startConsole(b *built) error {
	if b.cfg.Admin == nil {
		return nil
	}
	if _, err := consoleTokensOf(b); err != nil {
		return err
	}
	tlsCfg, err := r.consoleTLS(b)
	if err != nil {
		return err
	}
	c, err := r.openConsole(b, tlsCfg)
	if err != nil {
		return err
	}
	r.console = c
	c.serve()
	r.log.Info("operator console listening", "address", c.ln.Addr().String(), "tls", tlsCfg != nil)
	return nil
}

// consoleChange is a reload's prepared console change: apply it after the
// swap, or abort it.
type consoleChange struct {
	next   *console    // a new console (new address), not yet serving
	tls    *tls.Config // the kept console's new TLS configuration
	keep   bool
	remove bool
}

// prepareConsole checks nb's admin block and binds a new address if it
// moved; nothing running changes.
func (r *Runtime) prepareConsole(nb *built) (consoleChange, error) {
	if nb.cfg.Admin == nil {
		return consoleChange{remove: r.console != nil}, nil
	}
	if _, err := consoleTokensOf(nb); err != nil {
		return consoleChange{}, err
	}
	tlsCfg, err := r.consoleTLS(nb)
	if err != nil {
		return consoleChange{}, err
	}
	if r.console != nil && r.console.serves(nb.cfg.Admin.Address) {
		return consoleChange{keep: true, tls: tlsCfg}, nil
	}
	next, err := r.openConsole(nb, tlsCfg)
	if err != nil {
		return consoleChange{}, err
	}
	return consoleChange{next: next, remove: r.console != nil}, nil
}

func (cc consoleChange) abort() {
	if cc.next != nil {
		_ = cc.next.ln.Close()
	}
}

// apply makes the change; called with r.mu held, after the swap.
func (r *Runtime) applyConsole(cc consoleChange) {
	switch {
	case cc.keep:
		if r.console.ln.setTLS(cc.tls) {
			r.log.Info("operator console switched", "address", r.console.ln.Addr().String(), "tls", cc.tls != nil)
		}
		return
	case cc.remove:
		old := r.console
		r.console = nil
		go old.close() // in-flight console requests finish on their own
		r.log.Info("operator console closed", "address", old.ln.Addr().String())
	}
	if cc.next != nil {
		r.console = cc.next
		cc.next.serve()
		r.log.Info("operator console listening", "address", cc.next.ln.Addr().String(), "tls", cc.next.ln.tls.Load() != nil)
	}
}
