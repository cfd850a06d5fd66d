package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/oauthrelay/oauthrelay/internal/passwd"
)

// authCache remembers recent successful local logins, so that clients that
// open a connection per message (printers, cron jobs) do not pay a bcrypt or
// argon2id computation each time. It stores a keyed MAC of the password
// (the key never leaves the process and changes at every start), never the
// password, and an entry only matches while the client's configured hash is
// the one it was verified against.
type authCache struct {
	key [32]byte
	ttl time.Duration
	// sf makes simultaneous logins with the same credentials (a burst of
	// connections from one application) share one hash computation.
	sf singleflight.Group

	mu      sync.Mutex
	entries map[string]authEntry
}

type authEntry struct {
	mac     [32]byte
	hash    string
	expires time.Time
}

// authCacheTTL bounds how long a verified password is trusted without a
// new hash computation; a changed password_hash takes effect at once.
const authCacheTTL = 10 * time.Minute

// maxAuthCacheEntries bounds memory; one entry per client name suffices.
const maxAuthCacheEntries = 100_000

func newAuthCache() *authCache {
	c := &authCache{ttl: authCacheTTL, entries: map[string]authEntry{}}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *authCache) mac(username, password string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// verify checks password against hash, sharing the work among concurrent
// identical attempts.
func (c *authCache) verify(username, password, hash string) error {
	if c == nil {
		return passwd.Verify(hash, password)
	}
	m := c.mac(username, password)
	_, err, _ := c.sf.Do(string(m[:])+hash, func() (any, error) { return nil, passwd.Verify(hash, password) })
	return err
}

// check reports whether username/password was verified recently against
// hash.
func (c *authCache) check(username, password, hash string, now time.Time) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	e, ok := c.entries[username]
	c.mu.Unlock()
	if !ok || e.hash != hash || now.After(e.expires) {
		return false
	}
	m := c.mac(username, password)
	return hmac.Equal(m[:], e.mac[:])
}

// remember records a successful verification.
func (c *authCache) remember(username, password, hash string, now time.Time) {
	if c == nil {
		return
	}
	m := c.mac(username, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxAuthCacheEntries {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxAuthCacheEntries {
			return
		}
	}
	c.entries[username] = authEntry{mac: m, hash: hash, expires: now.Add(c.ttl)}
}
