package engine

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Sealed chunks (envelope encryption, store.Sealer). Each commit batch
// that writes bodies draws one data key from the Sealer and stores its
// wrapped form in a row of its own; each chunk is AES-256-GCM under that
// key with a random 96-bit nonce, stored as nonce || ciphertext || tag,
// and refers to its key's row. The additional data binds a chunk to its
// message, its index and whether it is the last one, so chunks cannot be
// swapped between messages or positions, and a body cannot be cut short
// unnoticed.

const (
	dataKeySize = 32 // AES-256
	nonceSize   = 12
	// keyTimeout bounds the Sealer's calls (a KMS over the network).
	keyTimeout = 30 * time.Second
	// keyCacheSize bounds the unwrapped keys kept in memory: about one per
	// batch whose bodies are still queued.
	keyCacheSize = 1024
)

// ErrCorrupt: a stored body does not read back as written.
var ErrCorrupt = errors.New("store: stored body is corrupt or was altered")

// SealKey is the data key of the batch being written.
type SealKey struct {
	ID   int64 // its row
	AEAD cipher.AEAD
}

// DrawnKey is a data key fresh from the Sealer, with the wrapped form to
// store; ID is set once it is stored.
type DrawnKey struct {
	SealKey
	Wrapped []byte
}

// DrawKey asks the sealer for a data key. Its errors wrap
// store.ErrUnavailable: without a key no body can be stored.
func DrawKey(sealer store.Sealer) (DrawnKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	key, wrapped, err := sealer.DataKey(ctx)
	if err != nil {
		return DrawnKey{}, fmt.Errorf("%w: drawing a data key: %w", store.ErrUnavailable, err)
	}
	if len(wrapped) == 0 {
		return DrawnKey{}, fmt.Errorf("%w: the sealer returned an empty wrapped key", store.ErrUnavailable)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return DrawnKey{}, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return DrawnKey{SealKey: SealKey{AEAD: aead}, Wrapped: wrapped}, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != dataKeySize {
		return nil, fmt.Errorf("store: data key has %d bytes, want %d", len(key), dataKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// chunkAD is the additional data of a chunk: message ID, index and
// whether it is the last chunk.
func chunkAD(dst []byte, id string, seq int64, last bool) []byte {
	dst = append(dst[:0], "oauthrelay-chunk-v1"...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(id)))
	dst = append(dst, id...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(seq))
	if last {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// ChunkSealer encrypts chunks into a buffer of its own, reused from one
// chunk to the next: the result is valid until the next Seal.
type ChunkSealer struct {
	ad, out []byte
}

// Seal encrypts chunk seq of message id, last telling whether the body
// ends with it. Its errors wrap store.ErrUnavailable.
func (s *ChunkSealer) Seal(key *SealKey, id string, seq int64, last bool, plain []byte) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("%w: sealing: %w", store.ErrUnavailable, err)
	}
	s.ad = chunkAD(s.ad, id, seq, last)
	s.out = append(s.out[:0], nonce[:]...)
	s.out = key.AEAD.Seal(s.out, nonce[:], plain, s.ad)
	return s.out, nil
}

// openChunk decrypts a sealed chunk in place.
func openChunk(aead cipher.AEAD, data []byte, ad []byte) ([]byte, error) {
	if len(data) < nonceSize+aead.Overhead() {
		return nil, ErrCorrupt
	}
	nonce, ct := data[:nonceSize], data[nonceSize:]
	plain, err := aead.Open(ct[:0], nonce, ct, ad)
	if err != nil {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// KeyCache keeps unwrapped data keys by their row ID. Engines never reuse
// a key's row ID, so an ID names one key forever.
type KeyCache struct {
	sealer store.Sealer
	mu     sync.Mutex
	keys   map[int64]cipher.AEAD
}

// NewKeyCache returns a cache unwrapping keys with sealer (nil: the store
// has none, and a sealed body cannot be read).
func NewKeyCache(sealer store.Sealer) *KeyCache {
	return &KeyCache{sealer: sealer, keys: make(map[int64]cipher.AEAD)}
}

// get returns the cipher of the key with the given row ID and wrapped form.
func (c *KeyCache) get(ctx context.Context, id int64, wrapped []byte) (cipher.AEAD, error) {
	if c.sealer == nil {
		return nil, errors.New("store: the body is sealed and the store has no sealer")
	}
	c.mu.Lock()
	aead, ok := c.keys[id]
	c.mu.Unlock()
	if ok {
		return aead, nil
	}
	key, err := c.sealer.Unwrap(ctx, wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: unwrapping a data key: %w", store.ErrUnavailable, err)
	}
	if aead, err = newAEAD(key); err != nil {
		return nil, err
	}
	c.put(id, aead)
	return aead, nil
}

func (c *KeyCache) put(id int64, aead cipher.AEAD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= keyCacheSize {
		for k := range c.keys { // evict one at random
			delete(c.keys, k)
			break
		}
	}
	c.keys[id] = aead
}
