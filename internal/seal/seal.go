// Package seal provides the store's sealers (store.Sealer): envelope
// encryption of queued message bodies at rest. The store encrypts each
// commit batch's bodies with a data key (AES-256-GCM) and keeps only the
// wrapped form of that key beside them; a sealer makes data keys and
// unwraps them again. No plaintext key is ever written anywhere.
//
//   - Transit: data keys from Vault's Transit secrets engine
//     (datakey/plaintext to make one, decrypt to unwrap), reused for a
//     rotation period and cached once unwrapped, so that Vault sees about
//     one request a minute, not one per batch or per read.
//   - Local: a random master key that lives as long as the process, for
//     `oauthrelay dev` and tests.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// KeySize is the length of every data key: AES-256.
const KeySize = 32

var (
	_ store.Sealer = (*Transit)(nil)
	_ store.Sealer = (*Local)(nil)
)

// clone copies a key, so that a caller who zeroes or reuses its slice
// cannot change the copy a sealer keeps.
func clone(b []byte) []byte {
	return append([]byte(nil), b...)
}

// newGCM returns AES-256-GCM with key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// randomKey returns a fresh data key. crypto/rand.Read never fails (it
// crashes the program when the system's generator does).
func randomKey() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	return k
}
