package engine

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// StoredChunk is a body chunk as an engine reads it back.
type StoredChunk struct {
	Data    []byte // as stored: the plaintext, or nonce || ciphertext || tag
	Sealed  bool
	KeyID   int64  // the data key's row, when Sealed
	Wrapped []byte // its wrapped form, when Sealed ("" when the row is missing)
}

// LoadChunk reads chunk seq of a body into c, appending its data to
// c.Data[:0] so that the buffer serves every chunk. found is false when
// the chunk is not there (the message left the queue).
type LoadChunk func(ctx context.Context, seq int64, c *StoredChunk) (found bool, err error)

// BodyReader reads a stored body chunk by chunk, each loaded when the
// one before is used up, so that a body is never in memory whole. It
// checks each chunk against the size and chunk count stored with the
// message, and opens sealed chunks with the keys of a KeyCache.
type BodyReader struct {
	ctx    context.Context
	id     string
	load   LoadChunk
	keys   *KeyCache
	size   int64 // bytes the body has
	chunks int64 // chunks it has
	seq    int64 // the next chunk to read
	read   int64 // bytes read so far
	chunk  StoredChunk
	rest   []byte // what is left of the current chunk
	ad     []byte
	err    error // sticky
}

// NewBodyReader returns a reader of message id's body of size bytes in
// chunks chunks, loaded under ctx.
func NewBodyReader(ctx context.Context, id string, size, chunks int64, keys *KeyCache, load LoadChunk) *BodyReader {
	return &BodyReader{ctx: ctx, id: id, size: size, chunks: chunks, keys: keys, load: load}
}

func (r *BodyReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.rest, r.err = r.next()
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// next returns the next chunk's plaintext, or io.EOF after the last one.
func (r *BodyReader) next() ([]byte, error) {
	if r.seq == r.chunks {
		if r.read != r.size {
			return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrCorrupt, r.id, r.read, r.size)
		}
		return nil, io.EOF
	}
	found, err := r.load(r.ctx, r.seq, &r.chunk)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: %s left the queue while its body was read", store.ErrNotFound, r.id)
	}
	plain := r.chunk.Data
	if r.chunk.Sealed {
		if plain, err = r.open(); err != nil {
			return nil, err
		}
	}
	r.seq++
	r.read += int64(len(plain))
	return plain, nil
}

func (r *BodyReader) open() ([]byte, error) {
	c := &r.chunk
	if len(c.Wrapped) == 0 {
		return nil, fmt.Errorf("%w: %s: chunk %d refers to a missing key", ErrCorrupt, r.id, r.seq)
	}
	aead, err := r.keys.get(r.ctx, c.KeyID, c.Wrapped)
	if err != nil {
		return nil, err
	}
	r.ad = chunkAD(r.ad, r.id, r.seq, r.seq == r.chunks-1)
	plain, err := openChunk(aead, c.Data, r.ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: chunk %d", err, r.id, r.seq)
	}
	return plain, nil
}

// Close releases the reader's buffer; later reads fail.
func (r *BodyReader) Close() error {
	r.chunk, r.rest = StoredChunk{}, nil
	if r.err == nil || r.err == io.EOF {
		r.err = errors.New("store: body reader closed")
	}
	return nil
}
