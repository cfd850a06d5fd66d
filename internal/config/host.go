package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/hashicorp/hcl/v2"
)

// hostFileKind says how a file named by the configuration is checked.
type hostFileKind int

const (
	caBundleFile   hostFileKind = iota // PEM certificates to trust
	keyPairFile                        // a certificate file and its key file
	storeDirectory                     // a directory the relay writes its database in
)

// hostFile is a file the configuration names, remembered by Load with the
// place it was written so that CheckHost can report file:line:col.
type hostFile struct {
	kind    hostFileKind
	path    string
	keyPath string // keyPairFile only
	owner   string // what names the file, for the message
	rng     hcl.Range
}

// CheckHost reads the files the configuration names — CA bundles and
// listener certificates with their keys — and reports each one that is
// missing, unreadable or invalid. It creates the store directory (mode
// 0700) when missing and checks that a file can be created and removed in
// it, as the database's journal files are. Load reads no file but the
// configuration itself, so that `validate` works on a checkout without the
// host's files; `run` and `check` call CheckHost after Load (README
// "validate and check"). Secrets are resolved later, by the runtime.
func CheckHost(cfg *Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, f := range cfg.hostFiles {
		if d := f.check(); d != nil {
			diags = append(diags, d)
		}
	}
	return diags
}

func (f hostFile) check() *hcl.Diagnostic {
	fail := func(summary, detail string) *hcl.Diagnostic {
		r := f.rng
		return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
	}
	switch f.kind {
	case caBundleFile:
		pem, err := os.ReadFile(f.path)
		if err != nil {
			return fail("Cannot read CA file", f.owner+": "+err.Error()+".")
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fail("Invalid CA file", f.owner+": "+f.path+" holds no PEM certificate.")
		}
	case keyPairFile:
		// LoadX509KeyPair's errors name the files and the cause, never
		// key material.
		if _, err := tls.LoadX509KeyPair(f.path, f.keyPath); err != nil {
			return fail("Cannot load TLS certificate", f.owner+": "+err.Error()+".")
		}
	case storeDirectory:
		return f.checkWritableDir(fail)
	}
	return nil
}

// checkWritableDir creates the directory if needed, then a file in it,
// and removes the file again.
func (f hostFile) checkWritableDir(fail func(summary, detail string) *hcl.Diagnostic) *hcl.Diagnostic {
	// 0700: the database holds queued messages and delivery history.
	if err := os.MkdirAll(f.path, 0o700); err != nil {
		return fail("Cannot create store directory", f.owner+": "+err.Error()+".")
	}
	probe, err := os.CreateTemp(f.path, ".oauthrelay-check-*")
	if err != nil {
		return fail("Store directory not writable", f.owner+": "+err.Error()+".")
	}
	closeErr := probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return fail("Store directory not writable", f.owner+": "+err.Error()+".")
	}
	if closeErr != nil {
		return fail("Store directory not writable", f.owner+": "+closeErr.Error()+".")
	}
	return nil
}
