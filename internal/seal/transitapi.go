package seal

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// Steps named in errors.
const (
	stepDataKey = "transit datakey"
	stepDecrypt = "transit decrypt"
	stepCheck   = "transit check"
)

var (
	errNotTransit = errors.New("the wrapped key is not a Transit ciphertext (\"vault:v<version>:…\"); was it sealed by another sealer, such as the local one of `oauthrelay dev`?")
	errNoClient   = errors.New("no Vault client (not logged in)")

	// Transit key names follow Vault's GenericNameRegex; mounts may nest.
	keyNameRE = regexp.MustCompile(`^\w([\w.-]*\w)?$`)
	mountRE   = regexp.MustCompile(`^[\w.-]+(/[\w.-]+)*$`)
)

// names are a Transit mount and key name, as the paths and errors use them.
type names struct{ mount, key string }

func newNames(mount, key string) names {
	return names{mount: strings.Trim(mount, "/"), key: key}
}

func (n names) dataKeyPath() string { return n.mount + "/datakey/plaintext/" + n.key }
func (n names) decryptPath() string { return n.mount + "/decrypt/" + n.key }

func (n names) validate() error {
	if !mountRE.MatchString(n.mount) {
		return fmt.Errorf("invalid Transit mount %q", n.mount)
	}
	if !keyNameRE.MatchString(n.key) {
		return fmt.Errorf("invalid Transit key name %q", n.key)
	}
	return nil
}

// requestDataKey asks Transit for a new 256-bit data key: its plaintext
// and its ciphertext under the named key.
func requestDataKey(ctx context.Context, c *vault.Client, n names) (key, wrapped []byte, err error) {
	s, err := write(ctx, c, n, n.dataKeyPath(), map[string]any{"bits": KeySize * 8})
	if err != nil {
		return nil, nil, n.fail(stepDataKey, err)
	}
	if key, err = plaintextKey(s); err != nil {
		return nil, nil, n.fail(stepDataKey, err)
	}
	ct, _ := s.Data["ciphertext"].(string)
	if !isTransitCiphertext(ct) {
		return nil, nil, n.fail(stepDataKey, errors.New("Vault's reply holds no Transit ciphertext"))
	}
	return key, []byte(ct), nil
}

// requestDecrypt asks Transit for the data key inside a ciphertext.
func requestDecrypt(ctx context.Context, c *vault.Client, n names, ciphertext string) ([]byte, error) {
	s, err := write(ctx, c, n, n.decryptPath(), map[string]any{"ciphertext": ciphertext})
	if err != nil {
		return nil, n.fail(stepDecrypt, err)
	}
	key, err := plaintextKey(s)
	if err != nil {
		return nil, n.fail(stepDecrypt, err)
	}
	return key, nil
}

func write(ctx context.Context, c *vault.Client, n names, path string, data map[string]any) (*vault.Secret, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errNoClient
	}
	s, err := c.Logical().WriteWithContext(ctx, path, data)
	if err == nil && (s == nil || s.Data == nil) {
		err = errors.New("empty reply from Vault")
	}
	return s, err
}

// plaintextKey decodes the base64 "plaintext" of a reply into a data key.
func plaintextKey(s *vault.Secret) ([]byte, error) {
	p, _ := s.Data["plaintext"].(string)
	key, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("Vault's reply holds no base64 plaintext")
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("the key Transit returned has %d bytes, not %d: the wrapped value is not one of the relay's data keys", len(key), KeySize)
	}
	return key, nil
}

// isTransitCiphertext reports whether s looks like "vault:v<n>:<base64>".
func isTransitCiphertext(s string) bool {
	rest, ok := strings.CutPrefix(s, "vault:v")
	if !ok {
		return false
	}
	version, data, ok := strings.Cut(rest, ":")
	return ok && version != "" && strings.Trim(version, "0123456789") == "" && data != ""
}

// fail wraps err with the step, the mount and the key.
func (n names) fail(step string, err error) error {
	return &transitError{step: step, names: n, err: err}
}

// wrap is fail for errors that may have been wrapped already (a shared
// request's, or a context's).
func (n names) wrap(step string, err error) error {
	var te *transitError
	if errors.As(err, &te) {
		return err
	}
	return n.fail(step, err)
}

// transitError is a failed Transit step. Its text holds the step, the
// mount and key names, Vault's status and messages and what an operator
// can do — never a key, a ciphertext or a token (Vault's replies hold
// none). errors.As finds the *vault.ResponseError beneath.
type transitError struct {
	step string
	names
	err error
}

func (e *transitError) Unwrap() error { return e.err }

func (e *transitError) Error() string {
	var re *vault.ResponseError
	if !errors.As(e.err, &re) {
		return fmt.Sprintf("%s (mount %q, key %q): %v", e.step, e.mount, e.key, e.err)
	}
	reply := fmt.Sprintf("HTTP %d from Vault: %s", re.StatusCode, vaultMessages(re))
	switch {
	case re.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("%s (mount %q, key %q): permission denied (%s): the relay's Vault policy must grant \"update\" on %s and %s, and its token must be valid",
			e.step, e.mount, e.key, reply, e.dataKeyPath(), e.decryptPath())
	case replySays(re, "encryption key not found"):
		return fmt.Sprintf("%s: transit key %q not found at mount %q: create it with `vault write -f %s/keys/%s`",
			e.step, e.key, e.mount, e.mount, e.key)
	case re.StatusCode == http.StatusNotFound || replySays(re, "no handler for route"):
		return fmt.Sprintf("%s: no Transit secrets engine at mount %q (%s): enable it with `vault secrets enable -path=%s transit`",
			e.step, e.mount, reply, e.mount)
	case replySays(re, "message authentication failed"):
		return fmt.Sprintf("%s (mount %q, key %q): %s: the wrapped key was made with another Transit key or was altered",
			e.step, e.mount, e.key, reply)
	}
	return fmt.Sprintf("%s (mount %q, key %q): %s", e.step, e.mount, e.key, reply)
}

// multiErrorRE matches the list format of Vault's messages ("1 error
// occurred:\n\t* permission denied\n\n").
var multiErrorRE = regexp.MustCompile(`\d+ errors? occurred:|\n\t\* `)

// vaultMessages returns Vault's messages on one line.
func vaultMessages(re *vault.ResponseError) string {
	var msgs []string
	for _, m := range re.Errors {
		for _, part := range multiErrorRE.Split(m, -1) {
			if part = strings.TrimSpace(part); part != "" {
				msgs = append(msgs, part)
			}
		}
	}
	return strings.Join(msgs, "; ")
}

func replySays(re *vault.ResponseError, s string) bool {
	return strings.Contains(strings.Join(re.Errors, " "), s)
}
