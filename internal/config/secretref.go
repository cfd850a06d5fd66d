package config

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// SecretScheme says where a secret value comes from.
type SecretScheme string

const (
	SecretLiteral SecretScheme = "literal"
	SecretEnv     SecretScheme = "env"
	SecretFile    SecretScheme = "file"
	SecretVault   SecretScheme = "vault"
)

// SecretRef is a parsed secret-bearing attribute. It never prints the literal
// value: String, GoString and Format all describe the reference only, so a ref
// may be logged or wrapped in an error safely.
type SecretRef struct {
	Scheme SecretScheme
	// literal holds the value of a literal secret. Unexported so that
	// reflection-based printers (%+v, encoders) cannot reach it.
	literal string
	// EnvName is the variable of an env:// reference.
	EnvName string
	// FilePath is the absolute path of a file:// reference.
	FilePath string
	// Vault KV v2 coordinates of a vault:// reference.
	VaultMount, VaultPath, VaultField string
	// Range is where the reference was written, for diagnostics.
	Range hcl.Range
}

// Literal returns the inline value of a literal secret ("" for references).
func (r SecretRef) Literal() string { return r.literal }

// IsSet reports whether the attribute was given at all.
func (r SecretRef) IsSet() bool { return r.Scheme != "" }

// String describes the reference without revealing a literal value.
func (r SecretRef) String() string {
	switch r.Scheme {
	case SecretLiteral:
		return "literal value"
	case SecretEnv:
		return "env://" + r.EnvName
	case SecretFile:
		return "file://" + r.FilePath
	case SecretVault:
		return "vault://" + r.VaultMount + "/" + r.VaultPath + "#" + r.VaultField
	}
	return "unset"
}

// GoString keeps %#v from printing the literal.
func (r SecretRef) GoString() string { return "config.SecretRef(" + r.String() + ")" }

// Format makes every fmt verb use String, so %+v cannot reveal the literal.
func (r SecretRef) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// NewLiteralSecret builds a literal reference; used by callers that assemble a
// config in code (the dev sandbox, tests).
func NewLiteralSecret(v string) SecretRef { return SecretRef{Scheme: SecretLiteral, literal: v} }

var (
	schemePrefix = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	vaultField   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	// knownSchemeColon matches a value that starts with the name of a
	// supported scheme and a colon; without the "//" that follows in a
	// reference it is a mistyped reference, not a literal.
	knownSchemeColon = regexp.MustCompile(`^(?i)(env|file|vault):`)
)

// ParseSecretRef parses a secret attribute value: a literal, env://NAME,
// file:///absolute/path or vault://<kv-v2 mount>/<path>#<field>. A value that
// looks like a URL with any other scheme is rejected rather than taken as a
// literal, so that a typo such as "valut://..." never becomes the secret; so
// is one that starts with env:, file: or vault: (any case) without the "//",
// such as "vault:secret/x#y". Any other value, colons included ("abc:def"),
// is a literal (README "Configuration reference").
func ParseSecretRef(s string, rng hcl.Range) (SecretRef, error) {
	m := schemePrefix.FindStringSubmatch(s)
	if m == nil {
		if k := knownSchemeColon.FindStringSubmatch(s); k != nil {
			return SecretRef{}, missingSlashes(strings.ToLower(k[1]), s[len(k[0]):])
		}
		if s == "" {
			return SecretRef{}, fmt.Errorf("the value is empty")
		}
		return SecretRef{Scheme: SecretLiteral, literal: s, Range: rng}, nil
	}
	rest := s[len(m[0]):]
	switch strings.ToLower(m[1]) {
	case "env":
		if !envName.MatchString(rest) {
			return SecretRef{}, fmt.Errorf("env:// needs a variable name like env://SMTP_CLIENT_SECRET, got %q", "env://"+rest)
		}
		return SecretRef{Scheme: SecretEnv, EnvName: rest, Range: rng}, nil
	case "file":
		if !strings.HasPrefix(rest, "/") {
			return SecretRef{}, fmt.Errorf("file:// needs an absolute path (three slashes: file:///etc/oauthrelay/secret), got %q", "file://"+rest)
		}
		return SecretRef{Scheme: SecretFile, FilePath: path.Clean(rest), Range: rng}, nil
	case "vault":
		p, field, ok := strings.Cut(rest, "#")
		if !ok || field == "" {
			return SecretRef{}, fmt.Errorf("vault:// needs a #field, as in vault://secret/oauthrelay/app#client_secret")
		}
		if !vaultField.MatchString(field) {
			return SecretRef{}, fmt.Errorf("vault:// field %q may only contain letters, digits, '_', '-' and '.'", field)
		}
		mount, kvPath, ok := strings.Cut(strings.Trim(p, "/"), "/")
		if !ok || mount == "" || kvPath == "" || strings.Contains(p, "//") {
			return SecretRef{}, fmt.Errorf("vault:// needs a KV v2 mount and a path, as in vault://secret/oauthrelay/app#client_secret")
		}
		return SecretRef{Scheme: SecretVault, VaultMount: mount, VaultPath: kvPath, VaultField: field, Range: rng}, nil
	}
	return SecretRef{}, fmt.Errorf("unknown secret reference scheme %q (use env://, file:///, vault:// or a literal value)", m[1])
}

// missingSlashes explains a reference written without "//". It suggests
// the intended reference only when that is a valid one (a variable name,
// a path, a KV path with a field), so a literal that merely starts like a
// reference is not repeated in the message.
func missingSlashes(scheme, rest string) error {
	rest = strings.TrimLeft(rest, "/")
	if scheme == "file" {
		rest = "/" + rest
	}
	example := map[string]string{"env": "env://NAME", "file": "file:///absolute/path", "vault": "vault://mount/path#field"}[scheme]
	if suggestion := scheme + "://" + rest; validSuggestion(suggestion) {
		example = suggestion
	}
	return fmt.Errorf("a value starting with %q is read as a reference but lacks the \"//\"; did you mean %q?", scheme+":", example)
}

func validSuggestion(s string) bool {
	ref, err := ParseSecretRef(s, hcl.Range{})
	return err == nil && ref.Scheme != SecretLiteral && !strings.ContainsAny(s, " \t\r\n")
}
