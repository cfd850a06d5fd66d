package sqlite

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
)

// testSealer wraps data keys with AES-256-GCM under a key encryption key
// that exists only in the test, like a KMS would; it counts its calls.
type testSealer struct {
	kek      cipher.AEAD
	dataKeys atomic.Int64
	unwraps  atomic.Int64
	issued   chan []byte // every plaintext data key issued, when not nil
	fail     atomic.Bool
}

func newTestSealer(t testing.TB) *testSealer {
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
	return &testSealer{kek: aead}
}

var errSealerDown = errors.New("test sealer: KMS unreachable")

func (s *testSealer) DataKey(ctx context.Context) (key, wrapped []byte, err error) {
	if s.fail.Load() {
		return nil, nil, errSealerDown
	}
	s.dataKeys.Add(1)
	key = make([]byte, 32)
	nonce := make([]byte, s.kek.NonceSize())
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	if s.issued != nil {
		s.issued <- append([]byte(nil), key...)
	}
	return key, s.kek.Seal(nonce, nonce, key, nil), nil
}

func (s *testSealer) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if s.fail.Load() {
		return nil, errSealerDown
	}
	s.unwraps.Add(1)
	n := s.kek.NonceSize()
	if len(wrapped) < n {
		return nil, errors.New("test sealer: short wrapped key")
	}
	return s.kek.Open(nil, wrapped[:n], wrapped[n:], nil)
}
