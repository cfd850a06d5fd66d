// Package secrets resolves the secret references of a configuration
// (literal, env://, file://, vault://) into values, and hands them to the
// rest of the relay as getters so that a rotated value is picked up without
// rebuilding anything. Values never appear in errors or logs: errors name
// the reference only.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// Getter returns the current value of one secret.
type Getter func() (string, error)

// VaultReader reads one field of a KV v2 secret. It is implemented by the
// Vault client; a Store without one refuses vault:// references.
type VaultReader interface {
	ReadField(ctx context.Context, mount, path, field string) (string, error)
}

// Store holds the resolved value of every referenced secret.
type Store struct {
	vault VaultReader
	env   func(string) (string, bool)

	mu     sync.RWMutex
	values map[string]string // by reference key
}

// Option configures a Store.
type Option func(*Store)

// WithVault lets the store resolve vault:// references.
func WithVault(v VaultReader) Option { return func(s *Store) { s.vault = v } }

// WithEnv replaces os.LookupEnv, for tests.
func WithEnv(lookup func(string) (string, bool)) Option { return func(s *Store) { s.env = lookup } }

// Load resolves every reference. It fails with one error per unresolvable
// reference, each naming the reference and its place in the configuration.
func Load(ctx context.Context, refs []config.SecretRef, opts ...Option) (*Store, error) {
	s := &Store{env: os.LookupEnv, values: map[string]string{}}
	for _, o := range opts {
		o(s)
	}
	var errs []error
	for _, ref := range refs {
		if ref.Scheme == config.SecretLiteral || !ref.IsSet() {
			continue
		}
		key := ref.String()
		if _, done := s.values[key]; done {
			continue
		}
		v, err := s.resolve(ctx, ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", refPlace(ref), err))
			continue
		}
		s.values[key] = v
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func refPlace(ref config.SecretRef) string {
	if ref.Range.Filename == "" {
		return ref.String()
	}
	return fmt.Sprintf("%s:%d:%d: %s", ref.Range.Filename, ref.Range.Start.Line, ref.Range.Start.Column, ref)
}

func (s *Store) resolve(ctx context.Context, ref config.SecretRef) (string, error) {
	switch ref.Scheme {
	case config.SecretEnv:
		v, ok := s.env(ref.EnvName)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", ref.EnvName)
		}
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty", ref.EnvName)
		}
		return v, nil
	case config.SecretFile:
		b, err := os.ReadFile(ref.FilePath)
		if err != nil {
			// The os error names the path and the cause, never content.
			return "", fmt.Errorf("cannot read secret file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", ref.FilePath)
		}
		return v, nil
	case config.SecretVault:
		if s.vault == nil {
			return "", errors.New("no Vault client is configured")
		}
		return s.vault.ReadField(ctx, ref.VaultMount, ref.VaultPath, ref.VaultField)
	}
	return "", fmt.Errorf("unsupported secret scheme %q", ref.Scheme)
}

// Get returns the current value of a reference.
func (s *Store) Get(ref config.SecretRef) (string, error) {
	if ref.Scheme == config.SecretLiteral {
		return ref.Literal(), nil
	}
	s.mu.RLock()
	v, ok := s.values[ref.String()]
	s.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("secret %s was not loaded", ref)
	}
	return v, nil
}

// Getter returns a function that reads the reference's current value, or
// nil when the reference is not set.
func (s *Store) Getter(ref config.SecretRef) Getter {
	if !ref.IsSet() {
		return nil
	}
	return func() (string, error) { return s.Get(ref) }
}

// Set replaces the value of a reference, as a rotation does.
func (s *Store) Set(ref config.SecretRef, value string) {
	s.mu.Lock()
	s.values[ref.String()] = value
	s.mu.Unlock()
}

// Values returns every secret value the store holds, for the log
// redaction safety net.
func (s *Store) Values() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.values))
	for _, v := range s.values {
		out = append(out, v)
	}
	return out
}
