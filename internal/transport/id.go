package transport

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"sync"
	"time"
)

// idEncoding is Crockford's base32 alphabet: no I, L, O or U, so an ID
// read aloud or typed from a log is unambiguous; its order is the order
// of the bytes, so IDs sort as they were made.
var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// ids makes the IDs of this process.
var ids idSource

// NewID returns a message ID: 16 characters of Crockford's base32 from
// 48 bits of Unix milliseconds and a 32-bit sequence that starts at a
// random value each millisecond. The same ID names a message in logs,
// replies ("queued as"), the queue and the delivery history.
//
// IDs are time-ordered so that the store's indexes keyed by ID grow at
// their right edge: random keys would dirty a random index page per
// message, and every dirty page is written at each commit. Within one
// process IDs strictly increase, even when the clock steps back; two
// instances collide only if their random sequences overlap within the
// same millisecond (about 2⁻²⁸ per busy millisecond), and the store
// refuses a duplicate ID rather than overwrite.
func NewID() string { return ids.next(time.Now()) }

type idSource struct {
	mu  sync.Mutex
	ms  uint64 // the millisecond of the last ID
	seq uint32 // the sequence of the last ID
}

func (s *idSource) next(now time.Time) string {
	s.mu.Lock()
	ms, seq := s.advance(uint64(now.UnixMilli()))
	s.mu.Unlock()
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], ms<<16) // 48 bits of milliseconds
	binary.BigEndian.PutUint32(b[6:], seq)
	return idEncoding.EncodeToString(b[:])
}

// advance moves to the next (millisecond, sequence) pair after the last
// one; a new millisecond draws a new random start (its top bit clear, so
// that about 2³¹ IDs fit in the millisecond before it borrows the next).
func (s *idSource) advance(ms uint64) (uint64, uint32) {
	ms &= 1<<48 - 1
	switch {
	case ms > s.ms:
		s.ms, s.seq = ms, s.randomStart()
	case s.seq == 1<<32-1:
		s.ms, s.seq = s.ms+1, s.randomStart()
	default:
		s.seq++ // same millisecond, or the clock stepped back
	}
	return s.ms, s.seq
}

func (s *idSource) randomStart() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return binary.BigEndian.Uint32(b[:]) >> 1
}
