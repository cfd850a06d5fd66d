package spool

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	gcmTagSize = 16
	// recordSize is the size on disk of a full record: its plaintext and
	// the GCM tag.
	recordSize = ChunkSize + gcmTagSize
)

// ErrCorrupt is returned when a spill file does not read back as it was
// written: a record was altered, moved or cut short.
var ErrCorrupt = errors.New("spool: spill file corrupt")

// spillFile is a message's encrypted, unlinked temporary file (see the
// package comment for the format).
type spillFile struct {
	f       *os.File
	name    string // set only if the file could not be unlinked at once
	aead    cipher.AEAD
	buf     []byte // plaintext of the record being filled; cap recordSize
	records uint64 // records written so far
	written int64  // bytes of file written so far
}

// createSpillFile opens a new spill file in dir with a fresh key. Errors
// wrap ErrFull and their cause.
func createSpillFile(dir string) (*spillFile, error) {
	aead, err := newMessageCipher()
	if err != nil {
		return nil, fmt.Errorf("%w: spill key: %w", ErrFull, err)
	}
	f, err := os.CreateTemp(dir, "oauthrelay-spool-*")
	if err != nil {
		return nil, fmt.Errorf("%w: creating spill file: %w", ErrFull, err)
	}
	s := &spillFile{f: f, aead: aead}
	// Unlinked at once: the open descriptor keeps the data reachable for
	// this process alone, and a crash leaves nothing on disk. Where an open
	// file cannot be removed (Windows), it is removed when closed.
	if os.Remove(f.Name()) != nil {
		s.name = f.Name()
	}
	return s, nil
}

// newMessageCipher returns AES-256-GCM under a new random key that exists
// only inside the returned value.
func newMessageCipher() (cipher.AEAD, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	clear(key)
	return cipher.NewGCM(block)
}

// recordNonce is the 96-bit GCM nonce of record i.
func recordNonce(nonce *[12]byte, i uint64) []byte {
	binary.BigEndian.PutUint64(nonce[4:], i)
	return nonce[:]
}

// space returns the free end of the record buffer, writing the buffer out
// first when it is full. A full record is written only when more bytes
// come, so the last record is always written by finish.
func (s *spillFile) space() ([]byte, error) {
	s.allocate()
	if len(s.buf) == ChunkSize {
		if err := s.writeRecord(s.buf); err != nil {
			return nil, err
		}
	}
	return s.buf[len(s.buf):ChunkSize], nil
}

func (s *spillFile) grow(n int) { s.buf = s.buf[:len(s.buf)+n] }

// allocate makes the record buffer: room for a record's plaintext and, as
// it is sealed in place, its tag.
func (s *spillFile) allocate() {
	if s.buf == nil {
		s.buf = make([]byte, 0, recordSize)
	}
}

// writeRecord seals plain into the record buffer (in place when plain is
// the record buffer itself) and appends it to the file.
func (s *spillFile) writeRecord(plain []byte) error {
	s.allocate()
	var nonce [12]byte
	sealed := s.aead.Seal(s.buf[:0], recordNonce(&nonce, s.records), plain, nil)
	if _, err := s.f.WriteAt(sealed, s.written); err != nil {
		return fmt.Errorf("%w: writing spill file: %w", ErrFull, err)
	}
	s.records++
	s.written += int64(len(sealed))
	s.buf = s.buf[:0]
	return nil
}

// finish writes the last record (possibly empty) and frees the buffer.
func (s *spillFile) finish() error {
	s.allocate()
	err := s.writeRecord(s.buf)
	s.buf = nil
	return err
}

func (s *spillFile) close() {
	_ = s.f.Close()
	if s.name != "" {
		_ = os.Remove(s.name)
	}
	s.aead = nil
	s.buf = nil
}

// reader returns a new reader over the file's size bytes of plaintext.
func (s *spillFile) reader(size int64) *spillReader {
	return &spillReader{f: s.f, aead: s.aead, records: s.records, size: size}
}

// spillReader decrypts a spill file record by record. It reads with ReadAt
// only, so any number of readers share the file independently.
type spillReader struct {
	f       *os.File
	aead    cipher.AEAD
	records uint64
	size    int64
	next    uint64 // the next record to decrypt
	buf     []byte
	plain   []byte // decrypted bytes not yet returned
}

func (r *spillReader) Read(p []byte) (int, error) {
	if len(r.plain) == 0 {
		if err := r.load(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// WriteTo writes the rest of the message to w a record at a time.
func (r *spillReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.plain) == 0 {
			if err := r.load(); err == io.EOF {
				return total, nil
			} else if err != nil {
				return total, err
			}
		}
		n, err := w.Write(r.plain)
		total += int64(n)
		r.plain = r.plain[n:]
		if err != nil {
			return total, err
		}
	}
}

// load decrypts the next non-empty record into r.plain, or returns io.EOF
// after the last one.
func (r *spillReader) load() error {
	for len(r.plain) == 0 {
		if r.next >= r.records {
			return io.EOF
		}
		if err := r.open(r.next); err != nil {
			return err
		}
		r.next++
	}
	return nil
}

// open reads and authenticates record i. Every record is full but the
// last, whose length follows from the message size kept in memory, so a
// cut or altered file cannot pass for a shorter message.
func (r *spillReader) open(i uint64) error {
	plainLen := int64(ChunkSize)
	if i == r.records-1 {
		plainLen = r.size - int64(i)*ChunkSize
	}
	if r.buf == nil {
		r.buf = make([]byte, recordSize)
	}
	sealed := r.buf[:plainLen+gcmTagSize]
	if _, err := r.f.ReadAt(sealed, int64(i)*recordSize); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: record %d cut short", ErrCorrupt, i)
		}
		return fmt.Errorf("spool: reading spill file: %w", err)
	}
	var nonce [12]byte
	plain, err := r.aead.Open(sealed[:0], recordNonce(&nonce, i), sealed, nil)
	if err != nil {
		return fmt.Errorf("%w: record %d fails authentication", ErrCorrupt, i)
	}
	r.plain = plain
	return nil
}
