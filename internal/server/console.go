package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/admin"
	"github.com/oauthrelay/oauthrelay/internal/config"
)

// console is the operator console's listener (README "Operator
// console"): the admin API and the web dashboard on an address of their
// own. It is opened at Start, moved by a reload that changes its address
// or whether it speaks TLS, and closed first at shutdown.
type console struct {
	key consoleKey
	ln  net.Listener
	srv *http.Server
	// tls is the current certificate configuration: a reload swaps in one
	// built from the new configuration (files read again; secret
	// references follow their rotations at each handshake).
	tls atomic.Pointer[tls.Config]
}

// consoleKey is what a reload cannot change without a new socket.
type consoleKey struct {
	address string
	tls     bool
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
		Name: "admin", TLSMode: config.TLSImplicit,
		TLSCertFile: a.TLSCertFile, TLSKeyFile: a.TLSKeyFile, TLSCert: a.TLSCert, TLSKey: a.TLSKey,
	}
	return loadListenerTLS(lc, b.store.Get, r.log.Named("admin"))
}

// consoleTokensOf resolves the console's bearer tokens from b's secrets.
// Errors name the references, never a value.
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
			return admin.Tokens{}, fmt.Errorf("admin %s: %w", tok.name, err)
		}
		if len(v) < config.MinAdminTokenLength {
			return admin.Tokens{}, fmt.Errorf("admin %s (%s) is shorter than %d characters", tok.name, tok.ref, config.MinAdminTokenLength)
		}
		*tok.dst = v
	}
	if t.Read != "" && t.Read == t.Admin {
		return admin.Tokens{}, fmt.Errorf("admin read_token (%s) and admin_token (%s) hold the same value: every reader could act as an admin", a.ReadToken, a.AdminToken)
	}
	return t, nil
}

// consoleTokens are the current configuration's tokens, read at each
// request: a rotation in Vault applies without a reload.
func (r *Runtime) consoleTokens() (admin.Tokens, error) {
	return consoleTokensOf(r.current.Load())
}

// openConsole binds the console's address and prepares its server; serve
// starts it.
func (r *Runtime) openConsole(b *built, tlsCfg *tls.Config) (*console, error) {
	a := b.cfg.Admin
	ln, err := net.Listen("tcp", a.Address)
	if err != nil {
		return nil, fmt.Errorf("admin address %s: %w", a.Address, err)
	}
	c := &console{key: consoleKey{address: a.Address, tls: tlsCfg != nil}, ln: ln}
	c.tls.Store(tlsCfg)
	if tlsCfg != nil {
		c.ln = tls.NewListener(ln, &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return c.tls.Load(), nil },
		})
	}
	log := r.log.Named("admin")
	h := admin.New(consoleBackend{r}, admin.Options{Tokens: r.consoleTokens, Log: log}).Handler()
	c.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.StandardLogger(nil),
	}
	return c, nil
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
	next   *console    // a new console (new address or TLS), not yet serving
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
	if r.console != nil && r.console.key == (consoleKey{address: nb.cfg.Admin.Address, tls: tlsCfg != nil}) {
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
		r.console.tls.Store(cc.tls)
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
		r.log.Info("operator console listening", "address", cc.next.ln.Addr().String(), "tls", cc.next.key.tls)
	}
}
