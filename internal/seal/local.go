package seal

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
)

// localPrefix starts every key wrapped by a Local sealer.
const localPrefix = "local:v1:"

// localAAD binds a wrapped key to its purpose: the master key wraps data
// keys and nothing else.
var localAAD = []byte("oauthrelay seal data key")

// ErrLocalKeyGone is returned by Local.Unwrap for a key another process
// (or another Local) wrapped, or that was altered: GCM cannot tell which.
var ErrLocalKeyGone = errors.New("local seal: the key was wrapped by another process (or altered); the local sealer's master key lives only as long as the process, so bodies sealed before a restart cannot be read")

// Local is a store.Sealer without Vault: a random master key, made by
// NewLocal and held in memory only, wraps each data key with AES-256-GCM.
//
// Process-lifetime key: bodies cannot be read after a restart — dev and
// tests only.
type Local struct {
	master cipher.AEAD
}

// NewLocal returns a sealer with a new random master key.
// Process-lifetime key: bodies cannot be read after a restart — dev and
// tests only.
func NewLocal() *Local {
	aead, err := newGCM(randomKey())
	if err != nil {
		panic(err) // unreachable: the key has a valid AES length
	}
	return &Local{master: aead}
}

// DataKey returns a new random data key and its wrapped form
// ("local:v1:" and the base64 of a nonce and the sealed key).
func (l *Local) DataKey(context.Context) (key, wrapped []byte, err error) {
	key = randomKey()
	nonce := randomNonce(l.master.NonceSize())
	sealed := l.master.Seal(nonce, nonce, key, localAAD)
	return key, []byte(localPrefix + base64.RawStdEncoding.EncodeToString(sealed)), nil
}

// Unwrap returns the data key of a key this Local wrapped.
func (l *Local) Unwrap(_ context.Context, wrapped []byte) ([]byte, error) {
	enc, ok := strings.CutPrefix(string(wrapped), localPrefix)
	if !ok {
		return nil, errors.New("local seal: the wrapped key was not made by the local sealer")
	}
	sealed, err := base64.RawStdEncoding.DecodeString(enc)
	ns := l.master.NonceSize()
	if err != nil || len(sealed) < ns {
		return nil, errors.New("local seal: the wrapped key is malformed")
	}
	key, err := l.master.Open(nil, sealed[:ns], sealed[ns:], localAAD)
	if err != nil {
		return nil, ErrLocalKeyGone
	}
	return key, nil
}

// randomNonce returns a random GCM nonce: with one master key per process
// and 96-bit random nonces, collisions stay negligible far beyond the
// number of batches a process commits (NIST SP 800-38D, 8.3).
func randomNonce(size int) []byte {
	n := make([]byte, size, size+KeySize+16)
	_, _ = rand.Read(n)
	return n
}
