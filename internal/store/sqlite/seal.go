package sqlite

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

// Sealed chunks (envelope encryption). Each commit batch that writes
// bodies draws one data key from the Sealer and stores its wrapped form
// in data_keys; each chunk is AES-256-GCM under that key with a random
// 96-bit nonce, stored as nonce || ciphertext || tag, and refers to its
// key's row. The additional data binds a chunk to its message, its index
// and whether it is the last one, so chunks cannot be swapped between
// messages or positions, and a body cannot be cut short unnoticed.

const (
	dataKeySize = 32 // AES-256
	nonceSize   = 12
	// keyTimeout bounds the Sealer's calls (a KMS over the network).
	keyTimeout = 30 * time.Second
	// keyCacheSize bounds the unwrapped keys kept in memory: about one per
	// batch whose bodies are still queued.
	keyCacheSize = 1024
)

// errCorrupt: a stored body does not read back as written.
var errCorrupt = errors.New("store: stored body is corrupt or was altered")

// sealKey is the data key of the batch being written.
type sealKey struct {
	id   int64
	aead cipher.AEAD
}

// ensureKey draws the batch's data key and stores its wrapped form, once
// per batch and outside any request's savepoint (a request that fails
// must not take the key row of the others with it). A failure is kept for
// the rest of the batch.
func (b *batch) ensureKey() error {
	sealer := b.w.s.sealer
	if sealer == nil || b.key != nil {
		return nil
	}
	if b.keyErr != nil {
		return b.keyErr
	}
	var key drawnKey
	var err error
	if b.drawn != nil {
		key = *b.drawn
	} else {
		key, err = drawKey(sealer)
	}
	if err != nil {
		b.w.s.log.Error("cannot seal bodies: messages are refused", "error", err)
		b.keyErr = err
		return err
	}
	err = b.queryRow(`INSERT INTO data_keys (wrapped) VALUES (?) RETURNING id`, key.wrapped).Scan(&key.id)
	if err != nil {
		return b.fail(err)
	}
	b.key = &key.sealKey
	return nil
}

// predraw draws the batch's data key before its transaction begins when
// a request of the batch stores a body: drawing may wait on Vault, and
// the write lock (other writers, `oauthrelay queue`, the health check's
// Ping) must not wait with it.
func (b *batch) predraw(reqs []*request) {
	if b.w.s.sealer == nil {
		return
	}
	for _, r := range reqs {
		if r.bodies {
			key, err := drawKey(b.w.s.sealer)
			if err != nil {
				b.w.s.log.Error("cannot seal bodies: messages are refused", "error", err)
				b.keyErr = err
				return
			}
			b.drawn = &key
			return
		}
	}
}

type drawnKey struct {
	sealKey
	wrapped []byte
}

func drawKey(sealer store.Sealer) (drawnKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	key, wrapped, err := sealer.DataKey(ctx)
	if err != nil {
		return drawnKey{}, fmt.Errorf("%w: drawing a data key: %w", store.ErrUnavailable, err)
	}
	if len(wrapped) == 0 {
		return drawnKey{}, fmt.Errorf("%w: the sealer returned an empty wrapped key", store.ErrUnavailable)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return drawnKey{}, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return drawnKey{sealKey: sealKey{aead: aead}, wrapped: wrapped}, nil
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

// seal encrypts plain into the writer's output buffer.
func (w *writer) seal(key *sealKey, id string, seq int64, last bool, plain []byte) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	w.ad = chunkAD(w.ad, id, seq, last)
	w.out = append(w.out[:0], nonce[:]...)
	return key.aead.Seal(w.out, nonce[:], plain, w.ad), nil
}

// openChunk decrypts a sealed chunk in place.
func openChunk(aead cipher.AEAD, data []byte, ad []byte) ([]byte, error) {
	if len(data) < nonceSize+aead.Overhead() {
		return nil, errCorrupt
	}
	nonce, ct := data[:nonceSize], data[nonceSize:]
	plain, err := aead.Open(ct[:0], nonce, ct, ad)
	if err != nil {
		return nil, errCorrupt
	}
	return plain, nil
}

// keyCache keeps unwrapped data keys by their row ID. Rows are never
// reused (AUTOINCREMENT), so an ID names one key forever.
type keyCache struct {
	sealer store.Sealer
	mu     sync.Mutex
	keys   map[int64]cipher.AEAD
}

func newKeyCache(sealer store.Sealer) *keyCache {
	return &keyCache{sealer: sealer, keys: make(map[int64]cipher.AEAD)}
}

// get returns the cipher of the key with the given row ID and wrapped form.
func (c *keyCache) get(ctx context.Context, id int64, wrapped []byte) (cipher.AEAD, error) {
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

func (c *keyCache) put(id int64, aead cipher.AEAD) {
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
