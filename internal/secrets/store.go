// Package secrets resolves the secret references of a configuration
// (literal, env://, file://, vault://) into values, and hands them to the
// rest of the relay as getters so that a rotated value is picked up without
// rebuilding anything. It polls Vault for new versions, and writes refresh
// tokens rotated by a provider back where they came from. Values never
// appear in errors or logs: errors name the reference only.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

// Getter returns the current value of one secret.
type Getter func() (string, error)

// kvPath identifies a KV v2 secret.
type kvPath struct{ mount, path string }

func (p kvPath) String() string { return "vault://" + p.mount + "/" + p.path }

func pathOf(ref config.SecretRef) kvPath { return kvPath{ref.VaultMount, ref.VaultPath} }

// pathState is what the store last read of one KV v2 secret.
type pathState struct {
	version int
	fields  map[string]string
	refs    []config.SecretRef
	checked time.Time // when the version was last learned from Vault
}

// Store holds the resolved value of every referenced secret.
type Store struct {
	vault        *Vault
	env          func(string) (string, bool)
	log          hclog.Logger
	metrics      *Metrics
	pollInterval time.Duration

	mu         sync.RWMutex
	values     map[string]string // non-vault references, by key
	paths      map[kvPath]*pathState
	subs       []func(changed []config.SecretRef)
	valueHooks []func(key, value string)
	vaultBad   bool // the last poll failed

	writeMu     sync.Mutex // one write-back at a time
	warnedWrite map[string]bool

	prev *Store // a reload's predecessor, whose Vault reads are reused
}

// WithPrevious reuses what prev read from Vault for the secrets both
// configurations reference (a reload need not re-read thousands of paths:
// prev's polling kept them current). env:// and file:// are read anew.
func WithPrevious(prev *Store) Option { return func(s *Store) { s.prev = prev } }

// Option configures a Store.
type Option func(*Store)

// WithVault lets the store resolve and watch vault:// references.
func WithVault(v *Vault, pollInterval time.Duration) Option {
	return func(s *Store) { s.vault, s.pollInterval = v, pollInterval }
}

// WithValueHook calls fn with every value the store takes: each value
// loaded, re-read after a rotation in Vault, picked up from a changed
// file, or written back. The key names the reference (never the value);
// a value replaced by a rotation is reported once more under the key
// with " (previous)" appended. The runtime passes the log redactor's Set,
// so that rotated secrets are redacted as well as the first ones.
func WithValueHook(fn func(key, value string)) Option {
	return func(s *Store) {
		if fn != nil {
			s.valueHooks = append(s.valueHooks, fn)
		}
	}
}

// OnValue is WithValueHook for a store already loaded: fn is called with
// every value held now, then with every value taken from now on. The
// Vault client's credentials (its token, an unwrapped secret ID) are
// reported to fn too.
func (s *Store) OnValue(fn func(key, value string)) {
	if fn == nil {
		return
	}
	s.mu.Lock()
	s.valueHooks = append(s.valueHooks, fn)
	current := s.currentValuesLocked()
	s.mu.Unlock()
	for key, v := range current {
		fn(key, v)
	}
	if s.vault != nil {
		s.vault.SetValueHook(fn)
	}
}

// valueKey is the key under which a reference's value is reported.
func valueKey(ref config.SecretRef) string { return "secret:" + ref.String() }

// tookValue reports a value the store took to the value hooks; old, when
// set and different, is the value it replaced.
func (s *Store) tookValue(ref config.SecretRef, value, old string) {
	s.mu.RLock()
	hooks := s.valueHooks
	s.mu.RUnlock()
	key := valueKey(ref)
	for _, fn := range hooks {
		if old != "" && old != value {
			// An old refresh token may still be valid at the provider for
			// a while: keep it redacted too.
			fn(key+" (previous)", old)
		}
		fn(key, value)
	}
}

func (s *Store) currentValuesLocked() map[string]string {
	out := map[string]string{}
	for key, v := range s.values {
		out["secret:"+key] = v
	}
	for _, st := range s.paths {
		for _, ref := range st.refs {
			out[valueKey(ref)] = st.fields[ref.VaultField]
		}
	}
	return out
}

// WithEnv replaces os.LookupEnv, for tests.
func WithEnv(lookup func(string) (string, bool)) Option { return func(s *Store) { s.env = lookup } }

// WithLogger sets the logger.
func WithLogger(l hclog.Logger) Option { return func(s *Store) { s.log = l } }

// WithMetrics sets the collectors.
func WithMetrics(m *Metrics) Option { return func(s *Store) { s.metrics = m } }

// Load resolves every reference. It fails with one error per unresolvable
// reference, each naming the reference and its place in the configuration.
func Load(ctx context.Context, refs []config.SecretRef, opts ...Option) (*Store, error) {
	s := &Store{env: os.LookupEnv, values: map[string]string{}, paths: map[kvPath]*pathState{}, warnedWrite: map[string]bool{}}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	var errs []error
	fail := func(ref config.SecretRef, err error) { errs = append(errs, fmt.Errorf("%s: %w", refPlace(ref), err)) }
	for _, ref := range refs {
		switch {
		case !ref.IsSet() || ref.Scheme == config.SecretLiteral:
		case ref.Scheme == config.SecretVault:
			if s.vault == nil {
				fail(ref, errors.New("no Vault client is configured"))
				continue
			}
			p := pathOf(ref)
			st, ok := s.paths[p]
			if !ok && s.prev != nil && s.prev.vault == s.vault {
				s.prev.mu.RLock()
				if old, found := s.prev.paths[p]; found {
					st = &pathState{version: old.version, fields: maps.Clone(old.fields), checked: old.checked}
					s.paths[p], ok = st, true
				}
				s.prev.mu.RUnlock()
			}
			if !ok {
				kv, err := s.vault.read(ctx, p.mount, p.path)
				if err != nil {
					fail(ref, err)
					continue
				}
				st = &pathState{version: kv.version, fields: kv.fields, checked: time.Now()}
				s.paths[p] = st
			}
			if v := st.fields[ref.VaultField]; v == "" {
				fail(ref, fmt.Errorf("the secret at %s (version %d) has no field %q, or it is empty", p, st.version, ref.VaultField))
				continue
			}
			st.refs = appendRef(st.refs, ref)
		default:
			key := ref.String()
			if _, done := s.values[key]; done {
				continue
			}
			v, err := s.resolveLocal(ref)
			if err != nil {
				fail(ref, err)
				continue
			}
			s.values[key] = v
		}
	}
	s.prev = nil // do not keep the predecessor alive
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for key, v := range s.currentValuesLocked() {
		for _, fn := range s.valueHooks {
			fn(key, v)
		}
	}
	return s, nil
}

func appendRef(refs []config.SecretRef, ref config.SecretRef) []config.SecretRef {
	for _, r := range refs {
		if r.VaultField == ref.VaultField {
			return refs
		}
	}
	return append(refs, ref)
}

func refPlace(ref config.SecretRef) string {
	if ref.Range.Filename == "" {
		return ref.String()
	}
	return fmt.Sprintf("%s: %s", config.Position(ref.Range), ref)
}

// ResolveLocal reads a literal, env:// or file:// reference; the Vault
// login credentials are read with it.
func ResolveLocal(ref config.SecretRef) (string, error) {
	s := &Store{env: os.LookupEnv}
	v, err := s.resolveLocal(ref)
	if err != nil {
		return "", fmt.Errorf("%s: %w", refPlace(ref), err)
	}
	return v, nil
}

func (s *Store) resolveLocal(ref config.SecretRef) (string, error) {
	switch ref.Scheme {
	case config.SecretLiteral:
		return ref.Literal(), nil
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
	}
	return "", fmt.Errorf("unsupported secret scheme %q here", ref.Scheme)
}

// Get returns the current value of a reference.
func (s *Store) Get(ref config.SecretRef) (string, error) {
	if ref.Scheme == config.SecretLiteral {
		return ref.Literal(), nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ref.Scheme == config.SecretVault {
		if st, ok := s.paths[pathOf(ref)]; ok {
			if v := st.fields[ref.VaultField]; v != "" {
				return v, nil
			}
			return "", fmt.Errorf("%s: field missing or empty in version %d", ref, st.version)
		}
	} else if v, ok := s.values[ref.String()]; ok {
		return v, nil
	}
	return "", fmt.Errorf("secret %s was not loaded", ref)
}

// Getter returns a function that reads the reference's current value, or
// nil when the reference is not set.
func (s *Store) Getter(ref config.SecretRef) Getter {
	if !ref.IsSet() {
		return nil
	}
	return func() (string, error) { return s.Get(ref) }
}

// Subscribe registers fn to be called with the references whose values
// changed outside the relay (a rotation in Vault, or a file changed when
// Refresh found it).
func (s *Store) Subscribe(fn func(changed []config.SecretRef)) {
	s.mu.Lock()
	s.subs = append(s.subs, fn)
	s.mu.Unlock()
}

func (s *Store) notify(changed []config.SecretRef) {
	if len(changed) == 0 {
		return
	}
	s.mu.RLock()
	subs := append([]func([]config.SecretRef){}, s.subs...)
	s.mu.RUnlock()
	for _, fn := range subs {
		fn(changed)
	}
}

// Watch polls the KV v2 metadata of every referenced Vault secret each
// poll interval (±10%) and swaps in new versions, until ctx ends. While
// Vault is unreachable or sealed the last values stay in use.
func (s *Store) Watch(ctx context.Context) {
	if s.vault == nil || len(s.paths) == 0 {
		return
	}
	for sleep(ctx, jitter(s.pollInterval)) {
		s.poll(ctx)
	}
}

func (s *Store) poll(ctx context.Context) {
	s.mu.RLock()
	paths := make([]kvPath, 0, len(s.paths))
	for p := range s.paths {
		paths = append(paths, p)
	}
	s.mu.RUnlock()
	sort.Slice(paths, func(i, j int) bool { return paths[i].String() < paths[j].String() })
	failed := false
	for _, p := range paths {
		version, err := s.vault.currentVersion(ctx, p.mount, p.path)
		if err != nil {
			failed = true
			s.noteOutage(err)
			continue
		}
		s.mu.Lock()
		known := s.paths[p].version
		s.paths[p].checked = time.Now()
		s.mu.Unlock()
		// Compare for inequality, not order: a restored or rebuilt Vault
		// may number versions anew.
		if version != known {
			if _, err := s.reread(ctx, p); err != nil {
				failed = true
				s.noteOutage(err)
			}
		}
	}
	if !failed {
		s.mu.Lock()
		wasBad := s.vaultBad
		s.vaultBad = false
		s.mu.Unlock()
		if wasBad {
			s.log.Info("Vault is reachable again; watching for rotations")
		}
	}
}

func (s *Store) noteOutage(err error) {
	s.mu.Lock()
	first := !s.vaultBad
	s.vaultBad = true
	s.mu.Unlock()
	if first {
		s.log.Warn("cannot poll Vault; relaying continues with the secrets already loaded", "error", err)
	} else {
		s.log.Debug("Vault still unreachable", "error", err)
	}
}

// reread reads one Vault secret again, swaps in its values, and notifies
// subscribers of the references whose value changed.
func (s *Store) reread(ctx context.Context, p kvPath) ([]config.SecretRef, error) {
	kv, err := s.vault.read(ctx, p.mount, p.path)
	if err != nil {
		return nil, err
	}
	var changed []config.SecretRef
	var names, olds []string
	s.mu.Lock()
	st := s.paths[p]
	for _, ref := range st.refs {
		nv := kv.fields[ref.VaultField]
		if nv == "" {
			s.log.Error("a rotated Vault secret lacks a referenced field; keeping the previous value", "path", p.String(), "version", kv.version, "field", ref.VaultField)
			kv.fields[ref.VaultField] = st.fields[ref.VaultField]
			continue
		}
		if nv != st.fields[ref.VaultField] {
			changed = append(changed, ref)
			names = append(names, ref.VaultField)
			olds = append(olds, st.fields[ref.VaultField])
		}
	}
	old := st.version
	st.version, st.fields = kv.version, kv.fields
	s.mu.Unlock()
	for i, ref := range changed {
		s.tookValue(ref, kv.fields[ref.VaultField], olds[i])
	}
	if len(changed) > 0 {
		s.metrics.rotations.WithLabelValues("vault").Add(float64(len(changed)))
		s.log.Info("secret rotated in Vault", "path", p.String(), "from_version", old, "version", kv.version, "fields", strings.Join(names, ","))
		s.notify(changed)
	}
	return changed, nil
}

// Refresh re-reads the references now, outside the polling schedule, and
// reports whether any value changed. The token layer calls it when a
// provider refuses a credential, so that a rotation that happened since
// the last poll is picked up before the failure is reported.
func (s *Store) Refresh(ctx context.Context, refs ...config.SecretRef) bool {
	changed := false
	seen := map[kvPath]bool{}
	for _, ref := range refs {
		switch ref.Scheme {
		case config.SecretVault:
			p := pathOf(ref)
			if s.vault == nil || seen[p] {
				continue
			}
			seen[p] = true
			c, err := s.reread(ctx, p)
			if err != nil {
				s.log.Warn("cannot re-read a secret from Vault", "path", p.String(), "error", err)
			}
			changed = changed || len(c) > 0
		case config.SecretFile:
			v, err := s.resolveLocal(ref)
			if err != nil {
				continue
			}
			s.mu.Lock()
			old := s.values[ref.String()]
			diff := old != v
			s.values[ref.String()] = v
			s.mu.Unlock()
			if diff {
				s.tookValue(ref, v, old)
				s.log.Info("secret file changed", "file", ref.FilePath)
				s.metrics.rotations.WithLabelValues("file").Inc()
				s.notify([]config.SecretRef{ref})
				changed = true
			}
		}
	}
	return changed
}

// WriteBack stores a value the relay obtained itself (a refresh token the
// provider rotated) where ref points: into Vault with check-and-set on the
// version last read, keeping the secret's other fields; or into the file,
// atomically. On a check-and-set conflict (another instance rotated it
// first) the newer value is read and adopted, and ErrCASConflict returned.
// env:// and literal references cannot be written; the value is then kept
// in memory only.
func (s *Store) WriteBack(ctx context.Context, ref config.SecretRef, value string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// Registered before the write: a failing write must not leave the
	// value unknown to the log redaction.
	old, _ := s.Get(ref)
	s.tookValue(ref, value, old)
	switch ref.Scheme {
	case config.SecretVault:
		if s.vault == nil {
			return errors.New("no Vault client")
		}
		p := pathOf(ref)
		s.mu.RLock()
		st := s.paths[p]
		fields := make(map[string]string, len(st.fields))
		for k, v := range st.fields {
			fields[k] = v
		}
		cas := st.version
		s.mu.RUnlock()
		fields[ref.VaultField] = value
		version, err := s.vault.write(ctx, p.mount, p.path, fields, cas)
		if errors.Is(err, ErrCASConflict) {
			s.metrics.writeBacks.WithLabelValues("conflict").Inc()
			s.log.Warn("the secret changed in Vault since it was read (another instance rotated it?); adopting the newer version", "path", p.String(), "cas", cas)
			if _, rerr := s.reread(ctx, p); rerr != nil {
				return errors.Join(err, rerr)
			}
			return err
		}
		if err != nil {
			s.metrics.writeBacks.WithLabelValues("failed").Inc()
			return err
		}
		s.mu.Lock()
		st.fields[ref.VaultField] = value
		st.version = version
		s.mu.Unlock()
		s.metrics.writeBacks.WithLabelValues("stored").Inc()
		s.metrics.rotations.WithLabelValues("provider").Inc()
		s.log.Info("stored the rotated refresh token in Vault", "path", p.String(), "version", version)
		return nil
	case config.SecretFile:
		if err := writeFileAtomic(ref.FilePath, value); err != nil {
			s.metrics.writeBacks.WithLabelValues("failed").Inc()
			return err
		}
		s.mu.Lock()
		s.values[ref.String()] = value
		s.mu.Unlock()
		s.metrics.writeBacks.WithLabelValues("stored").Inc()
		s.metrics.rotations.WithLabelValues("provider").Inc()
		s.log.Info("stored the rotated refresh token in its file", "file", ref.FilePath)
		return nil
	}
	s.metrics.writeBacks.WithLabelValues("not_writable").Inc()
	if !s.warnedWrite[ref.String()] {
		s.warnedWrite[ref.String()] = true
		s.log.Warn("the provider rotated a refresh token whose reference cannot be written; the relay keeps the new one in memory: store it before the next restart", "reference", ref.String())
	}
	return nil
}

// WriteFile stores a secret value in a file atomically (a file://
// reference's target), keeping the file's permissions or using 0600.
func WriteFile(path, value string) error { return writeFileAtomic(path, value) }

func writeFileAtomic(path, value string) error {
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".oauthrelay-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(value + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// VaultStatus reports whether Vault answered the last poll, and the Vault
// token's expiry (zero: none, or no Vault).
func (s *Store) VaultStatus() (configured, up bool, tokenExpiry time.Time) {
	if s.vault == nil {
		return false, false, time.Time{}
	}
	s.mu.RLock()
	up = !s.vaultBad
	s.mu.RUnlock()
	s.vault.mu.Lock()
	tokenExpiry = s.vault.tokenExpiry
	s.vault.mu.Unlock()
	return true, up, tokenExpiry
}

// Values returns every secret value the store holds, for the log
// redaction safety net.
func (s *Store) Values() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, v := range s.values {
		out = append(out, v)
	}
	for _, st := range s.paths {
		for _, ref := range st.refs {
			out = append(out, st.fields[ref.VaultField])
		}
	}
	return out
}
