package engine

import (
	"bufio"
	"io"
)

// ChunkSize is the size of a stored body chunk: a large message takes few
// rows, and neither a writer nor a reader holds more than one chunk of it
// in memory.
const ChunkSize = 256 << 10

// Chunker cuts a body into chunks of ChunkSize in a buffer of its own,
// reused from one chunk and one body to the next.
type Chunker struct {
	buf []byte
	br  *bufio.Reader // the body being read, to peek for its end
}

// Start begins reading body (nil: an empty body).
func (c *Chunker) Start(body io.Reader) {
	if body == nil {
		body = eofReader{}
	}
	if c.buf == nil {
		c.buf = make([]byte, ChunkSize)
		c.br = bufio.NewReaderSize(body, 4096)
		return
	}
	c.br.Reset(body)
}

// Next reads the next chunk and reports whether the body ends there (a
// full chunk peeks one byte ahead). There is always a first chunk, so that
// the last one, even of an empty body, carries the "last" mark when
// sealed. The chunk is valid until the next call.
func (c *Chunker) Next() (chunk []byte, last bool, err error) {
	n, err := io.ReadFull(c.br, c.buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return c.buf[:n], true, nil
	case err != nil:
		return nil, false, err
	}
	if _, err := c.br.Peek(1); err == io.EOF {
		return c.buf[:n], true, nil
	} else if err != nil {
		return nil, false, err
	}
	return c.buf[:n], false, nil
}

// Stop drops the reference to the caller's body.
func (c *Chunker) Stop() {
	if c.br != nil {
		c.br.Reset(eofReader{})
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
