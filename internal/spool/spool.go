// Package spool holds the bytes of messages being relayed under one
// process-wide memory budget, so that many large messages at once cannot
// grow the relay's memory without bound.
//
// # Why
//
// A session receives the whole DATA before it sends it upstream (the
// client's 250 is the provider's reply, see the README, "How a message
// travels"), and may send it more than once (a retry on another upstream
// connection). Ten sessions holding a 33 MB message each would hold 330 MB;
// the Budget caps what all messages together hold in memory.
//
// # How
//
// A Message reserves memory from its Budget in chunks of ChunkSize bytes
// as it is written; the budget counts whole chunks and never grants more
// than its limit. When the budget cannot grant a chunk, the message spills:
// its chunks are written to a temporary file in the spill directory (and
// their memory returned to the budget), and the rest of the message goes to
// that file. With no spill directory, or when the file cannot be created or
// written (disk full, I/O error), the write fails with an error wrapping
// ErrFull and the cause, which the session answers with 452 4.3.1 (a
// temporary failure: the client keeps the message and retries later).
// Writers never wait for memory, so the budget cannot deadlock.
//
// # Encryption at rest
//
// A spill file is encrypted with AES-256-GCM under a key drawn from
// crypto/rand for that message alone and held only in process memory. The
// content is cut into records of ChunkSize plaintext bytes (the last one
// shorter); record i is sealed with the 96-bit nonce i (big-endian), so
// nonces never repeat under a key, and written at offset i × (ChunkSize +
// 16). The message's size is kept in memory, so a reader knows how many
// records to expect and how long each one is: a changed, swapped, missing
// or truncated record fails to open and the read returns an error rather
// than wrong bytes. Records are sealed once and never rewritten, which is
// why a message accepts no writes once its first Reader has been made.
//
// # Crash safety
//
// The file is created with mode 0600 and unlinked right after it is opened
// (on Unix), so it has no name on disk: when the process exits, crashes or
// is killed, the kernel frees its blocks and nothing is left behind to
// clean up. Even while it exists, its content is unreadable without the key,
// which never leaves memory. Messages are only ever in transit here; the
// spool is not a queue and nothing in it survives a restart.
//
// # Memory outside the budget
//
// The budget counts message bytes. A spilled message additionally holds one
// record buffer (ChunkSize + 16 bytes) while it is being written, and each
// reader of a spilled message holds one while it reads; these are bounded
// by the number of sessions, not by message sizes.
package spool

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ChunkSize is the unit in which a message reserves memory from its budget,
// and the plaintext size of a record in a spill file.
const ChunkSize = 64 << 10

// ErrFull reports that a message's bytes could be held neither in memory
// (the budget is exhausted) nor on disk (spilling is off, or the spill file
// could not be created or written). The error returned wraps ErrFull and,
// when there is one, the underlying cause; test with errors.Is.
var ErrFull = errors.New("spool: message budget full")

// ErrFinished is returned by a write after the message's first Reader: the
// message is complete once it is being read.
var ErrFinished = errors.New("spool: message already complete, no more writes")

// ErrReleased is returned by every method of a message after Release.
var ErrReleased = errors.New("spool: message released")

// Budget is the process-wide memory budget for message bytes. It is safe
// for concurrent use.
type Budget struct {
	mu       sync.Mutex
	limit    int64
	spillDir string
	inUse    int64
	peak     int64 // highest inUse ever, for tests of the limit
}

// NewBudget returns a budget of memoryLimit bytes (rounded down to whole
// chunks in effect; 0 or less keeps nothing in memory). Messages that do not
// fit spill to encrypted files in spillDir; spillDir "" turns spilling off.
func NewBudget(memoryLimit int64, spillDir string) *Budget {
	b := &Budget{}
	b.SetLimit(memoryLimit, spillDir)
	return b
}

// SetLimit changes the limit and the spill directory, as on a reload.
// Messages in flight keep what they hold: below a lowered limit, no new
// chunk is granted until enough has been released; a message that spills
// from now on uses the new directory, one that has spilled keeps its file.
func (b *Budget) SetLimit(memoryLimit int64, spillDir string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = max(memoryLimit, 0)
	b.spillDir = spillDir
}

// InUse returns the bytes reserved in memory now, a multiple of ChunkSize.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inUse
}

// New starts a message. Its owner must call Release on every path.
func (b *Budget) New() *Message {
	return &Message{budget: b}
}

// reserve grants n bytes if they fit under the limit.
func (b *Budget) reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inUse+n > b.limit {
		return false
	}
	b.inUse += n
	b.peak = max(b.peak, b.inUse)
	return true
}

// release returns n reserved bytes.
func (b *Budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inUse -= n
}

func (b *Budget) currentSpillDir() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spillDir
}

// Message holds the bytes of one message: written once (Write or
// ReadFrom), then read any number of times (Reader), then released. Writes
// come from one goroutine; Reader, Size, Spilled and Release may be called
// from any.
type Message struct {
	budget *Budget

	mu       sync.Mutex
	size     int64
	chunks   [][]byte   // in memory: every chunk full but the last
	reserved int64      // bytes of the budget this message holds
	spill    *spillFile // set once the message has spilled
	err      error      // the first write error; the message is unusable after it
	finished bool       // a Reader was made: no more writes
	released bool
}

// Write appends p. On error the message is unusable (every later write and
// Reader return the same error) and must still be released.
func (m *Message) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.write(p)
}

func (m *Message) write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		space, err := m.space()
		if err != nil {
			return written, err
		}
		n := copy(space, p[written:])
		m.grow(n)
		written += n
	}
	return written, nil
}

// ReadFrom appends everything r yields until io.EOF, reading straight into
// the message's chunks (or record buffer). Where a new chunk would be
// needed, it first reads into a small buffer, so that a message ending on a
// chunk boundary reserves (or spills) nothing for bytes that never come.
// Errors from r are returned as they are, so that a reader's own error
// (such as an SMTP size limit) keeps its meaning.
func (m *Message) ReadFrom(r io.Reader) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.writable(); err != nil {
		return 0, err
	}
	var scratch [4096]byte
	var total int64
	for {
		var n int
		var err, rerr error
		if m.hasFreeSpace() {
			var space []byte
			if space, err = m.space(); err == nil {
				n, rerr = r.Read(space)
				m.grow(n)
			}
		} else {
			n, rerr = r.Read(scratch[:])
			n, err = m.write(scratch[:n])
		}
		total += int64(n)
		switch {
		case err != nil:
			return total, err
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		}
	}
}

// Size returns the number of bytes written.
func (m *Message) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

// Spilled reports whether the message's bytes are in a spill file.
func (m *Message) Spilled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spill != nil
}

// Reader returns a new reader over the whole message from its first byte;
// readers are independent of each other and may be used concurrently. The
// reader also implements io.WriterTo, so io.Copy writes the message out
// without an intermediate buffer. The first call completes the message: no
// more writes are accepted. Readers must not be used after Release.
func (m *Message) Reader() (io.Reader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(); err != nil {
		return nil, err
	}
	if err := m.finish(); err != nil {
		return nil, err
	}
	if m.spill != nil {
		return m.spill.reader(m.size), nil
	}
	// A copy of the chunk list: net.Buffers consumes its list, not the bytes.
	bufs := make(net.Buffers, len(m.chunks))
	copy(bufs, m.chunks)
	return &memReader{m: m, bufs: bufs}, nil
}

// memReader reads an in-memory message. Chunks are recycled once the
// message is released, so every read checks, under the message's lock, that
// it was not: a reader used too late fails instead of returning another
// message's bytes.
type memReader struct {
	m    *Message
	bufs net.Buffers
}

func (r *memReader) Read(p []byte) (int, error) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if r.m.released {
		return 0, ErrReleased
	}
	return r.bufs.Read(p)
}

// WriteTo writes the remaining chunks one at a time.
func (r *memReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		r.m.mu.Lock()
		if r.m.released {
			r.m.mu.Unlock()
			return total, ErrReleased
		}
		if len(r.bufs) == 0 {
			r.m.mu.Unlock()
			return total, nil
		}
		chunk := r.bufs[0]
		r.bufs = r.bufs[1:]
		n, err := w.Write(chunk)
		r.m.mu.Unlock()
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// chunkPool recycles chunks: every message takes at least one, and a fresh
// 64 KiB allocation for each small message keeps the garbage collector busy.
var chunkPool = sync.Pool{New: func() any { return new([ChunkSize]byte) }}

func newChunk() []byte { return chunkPool.Get().(*[ChunkSize]byte)[:0] }

func freeChunk(c []byte) {
	if cap(c) == ChunkSize {
		chunkPool.Put((*[ChunkSize]byte)(c[:ChunkSize]))
	}
}

// Release returns the message's memory to the budget and closes (and so
// frees) its spill file. It is safe to call more than once and after any
// error.
func (m *Message) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.released {
		return
	}
	m.released = true
	m.budget.release(m.reserved)
	m.reserved = 0
	for _, c := range m.chunks {
		freeChunk(c)
	}
	m.chunks = nil
	if m.spill != nil {
		m.spill.close()
		m.spill = nil
	}
}

// usable returns the error that makes the message unusable, if any.
func (m *Message) usable() error {
	if m.released {
		return ErrReleased
	}
	return m.err
}

// writable returns why the message takes no more bytes, if it does not.
func (m *Message) writable() error {
	if err := m.usable(); err != nil {
		return err
	}
	if m.finished {
		return ErrFinished
	}
	return nil
}

// space returns where the next bytes go: the free end of the last chunk, a
// new chunk from the budget, or the spill file's record buffer.
func (m *Message) space() ([]byte, error) {
	if err := m.writable(); err != nil {
		return nil, err
	}
	if m.spill != nil {
		return m.fail(m.spill.space())
	}
	if last := len(m.chunks) - 1; last >= 0 && len(m.chunks[last]) < ChunkSize {
		return m.chunks[last][len(m.chunks[last]):ChunkSize], nil
	}
	if m.budget.reserve(ChunkSize) {
		m.reserved += ChunkSize
		m.chunks = append(m.chunks, newChunk())
		return m.chunks[len(m.chunks)-1][:ChunkSize], nil
	}
	if err := m.spillOut(); err != nil {
		return m.fail(nil, err)
	}
	return m.fail(m.spill.space())
}

// grow records that n bytes were put into the space last returned.
func (m *Message) grow(n int) {
	m.size += int64(n)
	if m.spill != nil {
		m.spill.grow(n)
		return
	}
	if last := len(m.chunks) - 1; last >= 0 {
		m.chunks[last] = m.chunks[last][:len(m.chunks[last])+n]
	}
}

// hasFreeSpace reports whether bytes can be added without reserving a
// chunk or writing a record.
func (m *Message) hasFreeSpace() bool {
	if m.spill != nil {
		return m.spill.buf != nil && len(m.spill.buf) < ChunkSize
	}
	last := len(m.chunks) - 1
	return last >= 0 && len(m.chunks[last]) < ChunkSize
}

// fail makes err sticky.
func (m *Message) fail(space []byte, err error) ([]byte, error) {
	if err != nil {
		m.err = err
	}
	return space, err
}

// spillOut moves the message to a new spill file: its (full) chunks become
// the first records, and each chunk's memory goes back to the budget as soon
// as it is on disk.
func (m *Message) spillOut() error {
	dir := m.budget.currentSpillDir()
	if dir == "" {
		return fmt.Errorf("%w: memory budget exhausted and spilling is off", ErrFull)
	}
	f, err := createSpillFile(dir)
	if err != nil {
		return err
	}
	m.spill = f
	for len(m.chunks) > 0 {
		if err := f.writeRecord(m.chunks[0]); err != nil {
			return err
		}
		freeChunk(m.chunks[0])
		m.chunks = m.chunks[1:]
		m.budget.release(ChunkSize)
		m.reserved -= ChunkSize
	}
	m.chunks = nil
	return nil
}

// finish completes the message once: the last record goes to disk.
func (m *Message) finish() error {
	if m.finished {
		return nil
	}
	m.finished = true
	if m.spill != nil {
		_, err := m.fail(nil, m.spill.finish())
		return err
	}
	return nil
}
