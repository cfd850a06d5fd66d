package storetest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
)

// Sealer is a store.Sealer for the engines' tests: it wraps data keys
// with AES-256-GCM under a key encryption key that exists only in the
// test, as a KMS would; it counts its calls and fails on demand.
type Sealer struct {
	kek      cipher.AEAD
	DataKeys atomic.Int64 // data keys issued
	Unwraps  atomic.Int64 // keys unwrapped
	Issued   chan []byte  // every plaintext data key issued, when not nil
	Fail     atomic.Bool  // every call fails with ErrSealerDown
}

// ErrSealerDown is the error of a Sealer told to fail.
var ErrSealerDown = errors.New("test sealer: KMS unreachable")

// NewSealer returns a Sealer with a fresh key encryption key.
func NewSealer(t testing.TB) *Sealer {
	t.Helper()
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &Sealer{kek: aead}
}

// DataKey implements store.Sealer.
func (s *Sealer) DataKey(ctx context.Context) (key, wrapped []byte, err error) {
	if s.Fail.Load() {
		return nil, nil, ErrSealerDown
	}
	s.DataKeys.Add(1)
	key = make([]byte, 32)
	nonce := make([]byte, s.kek.NonceSize())
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	if s.Issued != nil {
		s.Issued <- append([]byte(nil), key...)
	}
	return key, s.kek.Seal(nonce, nonce, key, nil), nil
}

// Unwrap implements store.Sealer.
func (s *Sealer) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if s.Fail.Load() {
		return nil, ErrSealerDown
	}
	s.Unwraps.Add(1)
	n := s.kek.NonceSize()
	if len(wrapped) < n {
		return nil, errors.New("test sealer: short wrapped key")
	}
	return s.kek.Open(nil, wrapped[:n], wrapped[n:], nil)
}
