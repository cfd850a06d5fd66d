package graph

import (
	"bytes"
	"io"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// maxPartHeader bounds the header section of one MIME part, as
// transport.MaxHeader bounds the message's: the MIME parser holds a
// part's header in memory (several times over while reading it), so a
// part with a header of megabytes would make the split use many times
// the message's size.
const maxPartHeader = transport.MaxHeader

// errPartHeader says a part's header section exceeds maxPartHeader.
var errPartHeader = errStructure{"a part's header section exceeds 64 KiB"}

// headerGuard reads the body of one multipart (RFC 2046 §5.1.1) for the
// MIME parser and fails when a part's header — the lines after one of its
// delimiters, up to the first empty line — exceeds maxPartHeader. It sees
// the bytes in order, below the parser's buffering, and knows only this
// multipart's boundary: a nested multipart's parts are guarded by the
// guard of that multipart's reader.
type headerGuard struct {
	r        io.Reader
	delim    []byte // "--" + boundary
	line     []byte // the start of the current line (enough to tell a delimiter)
	lineLen  int
	inHeader bool
	count    int
}

func newHeaderGuard(r io.Reader, boundary string) *headerGuard {
	return &headerGuard{r: r, delim: []byte("--" + boundary)}
}

func (g *headerGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	for i, c := range p[:n] {
		if g.inHeader {
			if g.count++; g.count > maxPartHeader {
				return i, errPartHeader
			}
		}
		if c != '\n' {
			g.lineLen++
			if len(g.line) < len(g.delim)+64 {
				g.line = append(g.line, c)
			}
			continue
		}
		g.endLine()
	}
	return n, err
}

// endLine notes what the line just read was: a delimiter of this
// multipart starts a part's header; an empty line ends it.
func (g *headerGuard) endLine() {
	blank := g.lineLen == 0 || g.lineLen == 1 && g.line[0] == '\r'
	switch {
	case g.inHeader && blank:
		g.inHeader, g.count = false, 0
	case !g.inHeader && g.lineLen <= len(g.line) && bytes.Equal(bytes.TrimRight(g.line, " \t\r"), g.delim):
		// A delimiter line, transport padding allowed (RFC 2046 §5.1.1);
		// the close delimiter ("--boundary--") starts no part.
		g.inHeader, g.count = true, 0
	}
	g.line, g.lineLen = g.line[:0], 0
}
