package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
)

// resolveSecrets resolves refs, logging in to Vault first when the
// configuration has a vault block; the Vault client is returned (nil
// without one) for commands that write to it.
func resolveSecrets(ctx context.Context, cfg *config.Config, refs []config.SecretRef) (*secrets.Store, *secrets.Vault, error) {
	var vc *secrets.Vault
	var opts []secrets.Option
	if cfg.Vault != nil {
		var err error
		if vc, err = secrets.NewVault(cfg.Vault, secrets.ResolveLocal, nil, nil); err == nil {
			err = vc.Login(ctx)
		}
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, secrets.WithVault(vc, 0))
	}
	store, err := secrets.Load(ctx, refs, opts...)
	if err != nil {
		return nil, nil, err
	}
	return store, vc, nil
}

// groupClientCertificate parses a group's certificate credential from the
// store; nil when the group has none.
func groupClientCertificate(g *config.AccountGroup, store *secrets.Store) (*oauth.ClientCertificate, error) {
	if !g.ClientCertificate.IsSet() {
		return nil, nil
	}
	certPEM, err := store.Get(g.ClientCertificate)
	if err != nil {
		return nil, err
	}
	keyPEM, err := store.Get(g.ClientPrivateKey)
	if err != nil {
		return nil, err
	}
	return oauth.ParseClientCertificate(certPEM, keyPEM)
}

// checkClientCertificates resolves every group's client_certificate and
// client_private_key and checks the pair as the token endpoint will need
// it: parsable, the key matching the certificate, RSA of at least 2048
// bits, and valid now; a certificate that expires within
// oauth.CertificateWarnPeriod is a warning (README "Setting up Microsoft
// 365"). Warnings are printed; errors are returned, as
// "file:line:col: summary: detail".
func checkClientCertificates(ctx context.Context, cfg *config.Config, now time.Time, stdio IO) []error {
	var refs []config.SecretRef
	for _, g := range cfg.Groups {
		if g.ClientCertificate.IsSet() {
			refs = append(refs, g.ClientCertificate, g.ClientPrivateKey)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	store, _, err := resolveSecrets(ctx, cfg, refs)
	if err != nil {
		return splitErrors(err)
	}
	var errs []error
	for _, g := range cfg.Groups {
		d := clientCertificateDiagnostic(g, store, now)
		switch {
		case d == nil:
		case d.Severity == hcl.DiagWarning:
			fmt.Fprintln(stdio.Stderr, config.FormatDiagnostic(d))
		default:
			errs = append(errs, fmt.Errorf("%s", config.FormatDiagnostic(d)))
		}
	}
	return errs
}

// clientCertificateDiagnostic checks one group's certificate credential.
func clientCertificateDiagnostic(g *config.AccountGroup, store *secrets.Store, now time.Time) *hcl.Diagnostic {
	if !g.ClientCertificate.IsSet() {
		return nil
	}
	diag := func(sev hcl.DiagnosticSeverity, at config.SecretRef, summary, detail string) *hcl.Diagnostic {
		r := at.Range
		return &hcl.Diagnostic{Severity: sev, Summary: summary, Detail: fmt.Sprintf("account group %q: %s.", g.Name, detail), Subject: &r}
	}
	cred, err := groupClientCertificate(g, store)
	if err != nil {
		at := g.ClientCertificate
		if strings.HasPrefix(err.Error(), "the client private key") {
			at = g.ClientPrivateKey
		}
		return diag(hcl.DiagError, at, "Invalid client certificate", err.Error())
	}
	switch note, unusable := cred.ExpiryNote(now, oauth.CertificateWarnPeriod); {
	case unusable:
		return diag(hcl.DiagError, g.ClientCertificate, "Client certificate not valid", note)
	case note != "":
		return diag(hcl.DiagWarning, g.ClientCertificate, "Client certificate expires soon", note)
	}
	return nil
}
