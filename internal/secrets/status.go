package secrets

import (
	"sort"
	"time"
)

// VaultStatus is the Vault client's state for the operator console.
type VaultStatus struct {
	Address     string
	AuthMethod  string
	Up          bool      // the last call to Vault succeeded
	TokenExpiry time.Time // zero: the token does not expire
	Logins      int
	Renewals    int
	// LastError is the last failed call's error (Vault's own messages
	// never hold the token or secret values); "" while up.
	LastError string
}

// Status reports the client's state.
func (v *Vault) Status() VaultStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return VaultStatus{
		Address: v.cfg.Address, AuthMethod: v.cfg.Auth.Method,
		Up: v.up, TokenExpiry: v.tokenExpiry, Logins: v.logins, Renewals: v.renewals,
		LastError: v.lastError,
	}
}

// noteUp records a successful call to Vault.
func (v *Vault) noteUp() {
	v.metrics.up.Set(1)
	v.mu.Lock()
	v.up, v.lastError = true, ""
	v.mu.Unlock()
}

// noteDown records a failed call that says Vault itself is down.
func (v *Vault) noteDown(err error) {
	v.metrics.up.Set(0)
	v.mu.Lock()
	v.up, v.lastError = false, err.Error()
	v.mu.Unlock()
}

// PathStatus is one Vault secret the store follows.
type PathStatus struct {
	Path    string // "vault://mount/path"
	Fields  []string
	Version int
	// Checked is when the store last learned the secret's version
	// (read at start or reload, or a poll).
	Checked time.Time
}

// VaultPaths lists the Vault secrets the store follows, by path: the
// field names, never the values.
func (s *Store) VaultPaths() []PathStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PathStatus, 0, len(s.paths))
	for p, st := range s.paths {
		ps := PathStatus{Path: p.String(), Version: st.version, Checked: st.checked}
		for _, r := range st.refs {
			ps.Fields = append(ps.Fields, r.VaultField)
		}
		sort.Strings(ps.Fields)
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
