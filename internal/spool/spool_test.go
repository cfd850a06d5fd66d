package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const chunk = ChunkSize

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// piecesReader yields data in pseudo-random pieces of 1 byte to 3 chunks,
// so reads end anywhere relative to chunk boundaries.
type piecesReader struct {
	data []byte
	rnd  *rand.Rand
}

func (r *piecesReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rnd.IntN(3*chunk))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// writeInPieces writes data with Write calls of pseudo-random sizes.
func writeInPieces(m *Message, data []byte, seed uint64) (int, error) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	written := 0
	for written < len(data) {
		n := min(len(data)-written, 1+rnd.IntN(2*chunk))
		k, err := m.Write(data[written : written+n])
		written += k
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// readAll reads the message through a new Reader, with Read calls.
func readAll(t *testing.T, m *Message) []byte {
	t.Helper()
	r, err := m.Reader()
	if err != nil {
		t.Fatalf("Reader: %v", err)
	}
	got, err := io.ReadAll(onlyReader{r})
	if err != nil {
		t.Fatalf("reading back: %v", err)
	}
	return got
}

// copyAll reads the message through a new Reader's WriteTo.
func copyAll(t *testing.T, m *Message) []byte {
	t.Helper()
	r, err := m.Reader()
	if err != nil {
		t.Fatalf("Reader: %v", err)
	}
	if _, ok := r.(io.WriterTo); !ok {
		t.Fatalf("reader %T does not implement io.WriterTo", r)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatalf("copying back: %v", err)
	}
	return buf.Bytes()
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func assertSame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

func chunksFor(size int) int64 { return int64((size + chunk - 1) / chunk * chunk) }

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, chunk - 1, chunk, chunk + 1, 2*chunk - 1, 2 * chunk, 3*chunk + 7, 5<<20 + 3}
	modes := []struct {
		name  string
		limit int64
		spill bool
		// spilled says whether a message of this size must have spilled.
		spilled func(size int) bool
	}{
		{"memory", 64 << 20, false, func(int) bool { return false }},
		{"spilled from the first byte", 0, true, func(size int) bool { return size > 0 }},
		{"spilled midway", 2 * chunk, true, func(size int) bool { return size > 2*chunk }},
	}
	writers := []struct {
		name  string
		write func(m *Message, data []byte) (int64, error)
	}{
		{"Write", func(m *Message, data []byte) (int64, error) {
			n, err := writeInPieces(m, data, uint64(len(data)))
			return int64(n), err
		}},
		{"ReadFrom", func(m *Message, data []byte) (int64, error) {
			return m.ReadFrom(&piecesReader{data: data, rnd: rand.New(rand.NewPCG(uint64(len(data)), 2))})
		}},
	}
	for _, mode := range modes {
		for _, w := range writers {
			for _, size := range sizes {
				t.Run(fmt.Sprintf("%s/%s/%d", mode.name, w.name, size), func(t *testing.T) {
					dir := ""
					if mode.spill {
						dir = t.TempDir()
					}
					b := NewBudget(mode.limit, dir)
					data := randomBytes(size, uint64(size))
					m := b.New()
					defer m.Release()
					n, err := w.write(m, data)
					if err != nil || n != int64(size) {
						t.Fatalf("writing %d bytes: wrote %d, %v", size, n, err)
					}
					if m.Size() != int64(size) {
						t.Errorf("Size() = %d, want %d", m.Size(), size)
					}
					if m.Spilled() != mode.spilled(size) {
						t.Errorf("Spilled() = %v, want %v", m.Spilled(), mode.spilled(size))
					}
					wantInUse := chunksFor(size)
					if m.Spilled() {
						wantInUse = 0 // a spilled message returns all its chunks
					}
					if got := b.InUse(); got != wantInUse {
						t.Errorf("InUse() = %d, want %d (whole chunks)", got, wantInUse)
					}
					assertSame(t, "Read", readAll(t, m), data)
					assertSame(t, "WriteTo", copyAll(t, m), data)
					assertSame(t, "Read again", readAll(t, m), data)
					m.Release()
					if got := b.InUse(); got != 0 {
						t.Errorf("InUse() after Release = %d, want 0", got)
					}
				})
			}
		}
	}
}

// Readers made from one message do not disturb each other.
func TestReadersAreIndependent(t *testing.T) {
	for _, limit := range []int64{64 << 20, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			b := NewBudget(limit, t.TempDir())
			data := randomBytes(3*chunk+500, 7)
			m := b.New()
			defer m.Release()
			if _, err := m.Write(data); err != nil {
				t.Fatal(err)
			}
			r1, err := m.Reader()
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, chunk+100)
			if _, err := io.ReadFull(r1, first); err != nil {
				t.Fatal(err)
			}
			assertSame(t, "second reader", readAll(t, m), data)
			rest, err := io.ReadAll(r1)
			if err != nil {
				t.Fatal(err)
			}
			assertSame(t, "first reader", append(first, rest...), data)
		})
	}
}

func TestErrFullWithoutSpillDir(t *testing.T) {
	b := NewBudget(2*chunk, "")
	m1 := b.New()
	data := randomBytes(3*chunk, 1)
	n, err := m1.Write(data)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Write over the budget without spill dir: %v, want ErrFull", err)
	}
	if n != 2*chunk {
		t.Errorf("Write reported %d bytes written, want %d (what fit)", n, 2*chunk)
	}
	if got := b.InUse(); got != 2*chunk {
		t.Errorf("InUse() = %d, want %d", got, 2*chunk)
	}
	if _, err := m1.Write([]byte("x")); !errors.Is(err, ErrFull) {
		t.Errorf("Write after a failure: %v, want the same ErrFull", err)
	}
	if _, err := m1.Reader(); !errors.Is(err, ErrFull) {
		t.Errorf("Reader after a failed write: %v, want ErrFull", err)
	}
	// Another message cannot get a single chunk while m1 holds the budget.
	m2 := b.New()
	if _, err := m2.ReadFrom(bytes.NewReader([]byte("hello"))); !errors.Is(err, ErrFull) {
		t.Errorf("second message: %v, want ErrFull", err)
	}
	m2.Release()
	m1.Release()
	m1.Release() // idempotent
	if got := b.InUse(); got != 0 {
		t.Fatalf("InUse() after Release = %d, want 0", got)
	}
	// The budget is whole again.
	m3 := b.New()
	defer m3.Release()
	if _, err := m3.Write(data[:2*chunk]); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestSpillFileCannotBeCreated(t *testing.T) {
	notADir := testutil.WriteFile(t, t.TempDir(), "file", "x")
	cases := []struct {
		name  string
		dir   string
		cause error
	}{
		{"missing directory", filepath.Join(t.TempDir(), "missing"), fs.ErrNotExist},
		{"not a directory", notADir, syscall.ENOTDIR},
	}
	pattern := bytes.Repeat([]byte("PRIVATE-MESSAGE-BODY "), chunk/8)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(chunk, tc.dir)
			m := b.New()
			_, err := m.Write(pattern)
			if !errors.Is(err, ErrFull) || !errors.Is(err, tc.cause) {
				t.Fatalf("Write: %v, want ErrFull wrapping %v", err, tc.cause)
			}
			testutil.AssertNoSecrets(t, "errors", err.Error(), []string{"PRIVATE-MESSAGE-BODY"})
			if m.Spilled() {
				t.Error("Spilled() = true without a spill file")
			}
			m.Release()
			m.Release()
			if got := b.InUse(); got != 0 {
				t.Errorf("InUse() after Release = %d, want 0", got)
			}
		})
	}
}

func TestTamperingIsDetected(t *testing.T) {
	size := int64(3*chunk + 100)
	lastRecord := int64(3 * recordSize)
	cases := []struct {
		name   string
		tamper func(f *os.File) error
	}{
		{"byte flipped in the first record", func(f *os.File) error { return flipByte(f, 10) }},
		{"byte flipped in a tag", func(f *os.File) error { return flipByte(f, recordSize-1) }},
		{"byte flipped in the last record", func(f *os.File) error { return flipByte(f, lastRecord+50) }},
		{"last byte cut", func(f *os.File) error { return f.Truncate(lastRecord + 100 + gcmTagSize - 1) }},
		{"last record cut", func(f *os.File) error { return f.Truncate(lastRecord) }},
		{"records swapped", func(f *os.File) error { return swapRecords(f, 0, 1) }},
		{"record replayed", func(f *os.File) error { return copyRecord(f, 0, 2) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(0, t.TempDir())
			m := b.New()
			defer m.Release()
			data := randomBytes(int(size), 3)
			if _, err := m.Write(data); err != nil {
				t.Fatal(err)
			}
			r, err := m.Reader() // seals the last record
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.tamper(m.spill.f); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrCorrupt) {
				t.Errorf("WriteTo over a tampered file: %v, want ErrCorrupt", err)
			}
			r2, err := m.Reader()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(onlyReader{r2}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Read over a tampered file: %v, want ErrCorrupt", err)
			}
		})
	}
}

func flipByte(f *os.File, off int64) error {
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0x01
	_, err := f.WriteAt(b, off)
	return err
}

func swapRecords(f *os.File, i, j int64) error {
	a, b := make([]byte, recordSize), make([]byte, recordSize)
	if _, err := f.ReadAt(a, i*recordSize); err != nil {
		return err
	}
	if _, err := f.ReadAt(b, j*recordSize); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, i*recordSize); err != nil {
		return err
	}
	_, err := f.WriteAt(a, j*recordSize)
	return err
}

func copyRecord(f *os.File, from, to int64) error {
	a := make([]byte, recordSize)
	if _, err := f.ReadAt(a, from*recordSize); err != nil {
		return err
	}
	_, err := f.WriteAt(a, to*recordSize)
	return err
}

// Twenty writers share a budget: memory in use never exceeds the limit,
// nothing deadlocks, every message reads back intact (or, with spilling
// off, fails with ErrFull), and everything is returned.
func TestConcurrentWritersStayWithinBudget(t *testing.T) {
	const writers, perMessage, limit = 20, 4 * chunk, 8 * chunk
	for _, spill := range []bool{true, false} {
		t.Run(fmt.Sprintf("spill=%v", spill), func(t *testing.T) {
			dir := ""
			if spill {
				dir = t.TempDir()
			}
			b := NewBudget(limit, dir)
			start := make(chan struct{})
			var written, held sync.WaitGroup
			release := make(chan struct{})
			results := make([]error, writers)
			spilled := make([]bool, writers)
			written.Add(writers)
			held.Add(writers)
			for i := range writers {
				go func() {
					defer held.Done()
					m := b.New()
					defer m.Release()
					data := randomBytes(perMessage+i, uint64(i))
					<-start
					_, err := writeInPieces(m, data, uint64(i))
					if err == nil {
						got, rerr := m.Reader()
						if rerr == nil {
							var buf bytes.Buffer
							_, rerr = io.Copy(&buf, got)
							if rerr == nil && !bytes.Equal(buf.Bytes(), data) {
								rerr = errors.New("content differs")
							}
						}
						err = rerr
					}
					results[i], spilled[i] = err, m.Spilled()
					written.Done()
					<-release // hold every message until all are written
				}()
			}
			close(start)
			written.Wait()
			inUse := b.InUse()
			close(release)
			held.Wait()

			full, spilledCount := 0, 0
			for i, err := range results {
				switch {
				case err == nil:
				case !spill && errors.Is(err, ErrFull):
					full++
				default:
					t.Errorf("writer %d: %v", i, err)
				}
				if spilled[i] {
					spilledCount++
				}
			}
			if inUse > limit || b.peak > limit {
				t.Errorf("memory in use reached %d (now %d), limit %d", b.peak, inUse, limit)
			}
			if inUse%chunk != 0 {
				t.Errorf("InUse() = %d, not whole chunks", inUse)
			}
			// At most two 4-chunk messages fit in 8 chunks: the rest spilled or failed.
			if spill && spilledCount < writers-2 {
				t.Errorf("%d messages spilled, want at least %d", spilledCount, writers-2)
			}
			if !spill && full < writers-2 {
				t.Errorf("%d messages failed with ErrFull, want at least %d", full, writers-2)
			}
			if got := b.InUse(); got != 0 {
				t.Errorf("InUse() after every Release = %d, want 0", got)
			}
		})
	}
}

// SetLimit applies to the next chunk a message asks for; what messages
// hold, and the files they spilled to, stay as they are.
func TestSetLimitWhileMessagesAreInFlight(t *testing.T) {
	b := NewBudget(4*chunk, "")
	data := randomBytes(6*chunk, 9)

	m1 := b.New()
	defer m1.Release()
	mustWrite(t, m1, data[:4*chunk])
	b.SetLimit(2*chunk, t.TempDir())
	if got := b.InUse(); got != 4*chunk {
		t.Fatalf("InUse() after lowering the limit = %d, want the %d already held", got, 4*chunk)
	}
	mustWrite(t, m1, data[4*chunk:]) // no chunk to be had under the new limit: spills
	if !m1.Spilled() || b.InUse() != 0 {
		t.Fatalf("after lowering the limit: Spilled() = %v, InUse() = %d; want true, 0", m1.Spilled(), b.InUse())
	}

	m2 := b.New()
	defer m2.Release()
	mustWrite(t, m2, data[:2*chunk])
	if m2.Spilled() || b.InUse() != 2*chunk {
		t.Fatalf("under the new limit: Spilled() = %v, InUse() = %d; want false, %d", m2.Spilled(), b.InUse(), 2*chunk)
	}

	b.SetLimit(2*chunk, "") // spilling turned off
	if _, err := m2.Write(data[2*chunk:]); !errors.Is(err, ErrFull) {
		t.Fatalf("over the limit with spilling off: %v, want ErrFull", err)
	}
	assertSame(t, "message spilled before the reload", readAll(t, m1), data)

	b.SetLimit(16*chunk, "")
	m3 := b.New()
	defer m3.Release()
	mustWrite(t, m3, data) // fits beside m2's two chunks
	assertSame(t, "message under the raised limit", readAll(t, m3), data)
	m2.Release()
	m1.Release()
	m3.Release()
	if got := b.InUse(); got != 0 {
		t.Errorf("InUse() after Release = %d, want 0", got)
	}
}

func mustWrite(t *testing.T, m *Message, p []byte) {
	t.Helper()
	if n, err := m.Write(p); err != nil || n != len(p) {
		t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
	}
}

func TestMessageLifecycle(t *testing.T) {
	t.Run("ReadFrom keeps no chunk for bytes that never came", func(t *testing.T) {
		b := NewBudget(16*chunk, "")
		m := b.New()
		defer m.Release()
		// A bytes.Reader fills the chunk exactly, then a further Read meets EOF.
		if _, err := m.ReadFrom(bytes.NewReader(randomBytes(2*chunk, 1))); err != nil {
			t.Fatal(err)
		}
		if got := b.InUse(); got != 2*chunk {
			t.Errorf("InUse() = %d, want %d", got, 2*chunk)
		}
	})
	t.Run("ReadFrom returns the source's error unchanged", func(t *testing.T) {
		b := NewBudget(16*chunk, t.TempDir())
		m := b.New()
		defer m.Release()
		sourceErr := errors.New("552 message too big")
		n, err := m.ReadFrom(io.MultiReader(bytes.NewReader(make([]byte, 100)), iotestErrReader{sourceErr}))
		if err != sourceErr || n != 100 {
			t.Errorf("ReadFrom = %d, %v; want 100, the source's error itself", n, err)
		}
	})
	t.Run("no writes once reading has begun", func(t *testing.T) {
		for _, limit := range []int64{16 * chunk, 0} {
			b := NewBudget(limit, t.TempDir())
			m := b.New()
			mustWrite(t, m, []byte("hello"))
			if _, err := m.Reader(); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Write([]byte("more")); !errors.Is(err, ErrFinished) {
				t.Errorf("limit %d: Write after Reader: %v, want ErrFinished", limit, err)
			}
			assertSame(t, "content", readAll(t, m), []byte("hello"))
			m.Release()
		}
	})
	t.Run("nothing works after Release", func(t *testing.T) {
		for _, limit := range []int64{16 * chunk, 0} {
			b := NewBudget(limit, t.TempDir())
			m := b.New()
			mustWrite(t, m, randomBytes(2*chunk, 2))
			r, err := m.Reader()
			if err != nil {
				t.Fatal(err)
			}
			m.Release()
			m.Release()
			if _, err := m.Write([]byte("x")); !errors.Is(err, ErrReleased) {
				t.Errorf("limit %d: Write after Release: %v, want ErrReleased", limit, err)
			}
			if _, err := m.Reader(); !errors.Is(err, ErrReleased) {
				t.Errorf("limit %d: Reader after Release: %v, want ErrReleased", limit, err)
			}
			if limit == 0 { // the spill file is closed: an old reader fails, it does not return garbage
				if _, err := io.ReadAll(r); err == nil {
					t.Error("reading a released spilled message succeeded")
				}
			}
			if got := b.InUse(); got != 0 {
				t.Errorf("limit %d: InUse() after Release = %d, want 0", limit, got)
			}
		}
	})
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func BenchmarkWriteRead(b *testing.B) {
	for _, size := range []int{1 << 20, 30 << 20} {
		data := randomBytes(size, 5)
		b.Run(fmt.Sprintf("bytes.Buffer/%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(onlyReader{bytes.NewReader(data)}); err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, bytes.NewReader(buf.Bytes())); err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, mode := range []struct {
			name  string
			limit int64
		}{{"memory", 1 << 30}, {"spilled", 0}} {
			b.Run(fmt.Sprintf("%s/%dMB", mode.name, size>>20), func(b *testing.B) {
				budget := NewBudget(mode.limit, b.TempDir())
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					m := budget.New()
					if _, err := m.ReadFrom(onlyReader{bytes.NewReader(data)}); err != nil {
						b.Fatal(err)
					}
					r, err := m.Reader()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, r); err != nil {
						b.Fatal(err)
					}
					m.Release()
				}
			})
		}
	}
}

// TestReaderAfterReleaseInMemory: chunks are recycled, so a reader of an
// in-memory message used after Release must fail rather than return
// another message's bytes.
func TestReaderAfterReleaseInMemory(t *testing.T) {
	b := NewBudget(4*ChunkSize, "")
	m := b.New()
	if _, err := m.Write([]byte("first message")); err != nil {
		t.Fatal(err)
	}
	r, err := m.Reader()
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	other := b.New()
	defer other.Release()
	if _, err := other.Write([]byte("second message, which reuses the chunk")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := r.Read(buf); err != ErrReleased {
		t.Fatalf("read after Release: %d bytes %q, %v; want ErrReleased", n, buf[:n], err)
	}
	if _, err := r.(io.WriterTo).WriteTo(io.Discard); err != ErrReleased {
		t.Fatalf("WriteTo after Release: %v; want ErrReleased", err)
	}
}
