package graph

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// The split of a message too large for sendMail into a MIME draft and the
// attachments added to it (README "Microsoft Graph"; doc.go says what
// Exchange makes of it).
//
// go-message's textproto reads the MIME structure: its header type keeps
// every field's raw bytes and order (the draft repeats the parts it keeps
// as they came), and its multipart reader, unlike mime/multipart's
// NextPart, does not decode quoted-printable behind the caller's back.
// Its Header helpers decode RFC 2231 and RFC 2047 file names.

const (
	// maxGraphMessageBytes is the largest message Exchange Online can send
	// (the highest MaxSendSize it allows, 150 MB); larger ones are refused
	// without contacting Graph.
	maxGraphMessageBytes = 150 << 20
	// maxAttachmentBytes is Graph's limit per attachment (upload
	// sessions take "files up to 150 MB").
	maxAttachmentBytes = 150 << 20
	// uploadSessionFrom: Microsoft's rule is "under 3 MB, POST the
	// attachment; between 3 MB and 150 MB, create an upload session". The
	// measured bounds (msgraph-sdk-java#52: sessions from 2 MiB, POSTs to
	// about 3 MiB) leave room on both sides of 3,000,000 bytes.
	uploadSessionFrom = 3_000_000
	// draftBudget is what the draft may take of maxMessageBytes: the rest
	// is slack for the estimate (a removed part's delimiter line).
	draftBudget = maxMessageBytes - 4<<10
	// maxParts and maxDepth bound the MIME structure the relay walks.
	maxParts = 1000
	maxDepth = 32
)

// node is one MIME entity of the message (RFC 2045 §2.4).
type node struct {
	header   textproto.Header
	hdrLen   int64  // its header section's length, as the draft writes it
	boundary string // multipart only
	children []*node
	bodyLen  int64 // a leaf's raw body length

	att     *attachment // a leaf that may leave the draft; nil: body text
	extract bool
}

// attachment is a leaf part that leaves the draft to be attached to it.
type attachment struct {
	index        int // the leaf's position among the message's leaves (1-based)
	name         string
	contentType  string
	contentID    string
	inline       bool
	size         int64 // decoded
	encoding     string
	decodeFailed bool
}

func (a *attachment) String() string {
	return fmt.Sprintf("part %d (%s, %d bytes)", a.index, a.contentType, a.size)
}

// kept reports whether anything of n stays in the draft.
func (n *node) kept() bool {
	if n.boundary == "" {
		return !n.extract
	}
	return slices.ContainsFunc(n.children, (*node).kept)
}

// draftSize estimates the bytes n takes in the draft: 0 when nothing of
// it stays.
func (n *node) draftSize() int64 {
	if n.boundary == "" {
		if n.extract {
			return 0
		}
		return n.hdrLen + n.bodyLen
	}
	var size int64
	for _, c := range n.children {
		if c.kept() {
			size += int64(len(n.delimiter(false))) + c.draftSize()
		}
	}
	if size == 0 {
		return 0
	}
	return n.hdrLen + size + int64(len(n.closeDelimiter()))
}

func (n *node) delimiter(first bool) string {
	if first {
		return "--" + n.boundary + "\r\n"
	}
	return "\r\n--" + n.boundary + "\r\n"
}

func (n *node) closeDelimiter() string { return "\r\n--" + n.boundary + "--\r\n" }

// errStructure says the MIME structure cannot be walked (RFC 2046
// multipart syntax broken, or beyond maxParts or maxDepth). Its text
// names the problem without quoting the message (the parser's errors
// quote the offending line).
type errStructure struct{ reason string }

func (e errStructure) Error() string { return "MIME structure: " + e.reason }

// structureError describes a parser error without its content.
func structureError(err error) errStructure {
	var es errStructure
	if errors.As(err, &es) {
		return es
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errStructure{"the message ends inside a multipart (no closing delimiter)"}
	}
	return errStructure{"a part's header or a multipart delimiter does not parse"}
}

// sourceError is a failure to read the message itself (the relay's
// storage), as opposed to what its content is.
type sourceError struct{ err error }

func (e sourceError) Error() string { return "reading the message: " + e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// source tags the message reader's errors, so that a broken MIME
// structure and a failing disk are told apart.
type source struct{ r io.Reader }

func (s source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = sourceError{err}
	}
	return n, err
}

// walkError classifies an error of a part reader: the source's, or the
// structure's.
func walkError(err error) error {
	var se sourceError
	if errors.As(err, &se) {
		return se
	}
	return structureError(err)
}

// scanner reads the structure of a message once (the first pass).
type scanner struct {
	parts, leaves int
}

// scan reads the body of an entity whose header is h.
func (s *scanner) scan(h textproto.Header, hdrLen int64, body io.Reader, depth int) (*node, error) {
	s.parts++
	if s.parts > maxParts {
		return nil, errStructure{fmt.Sprintf("more than %d parts", maxParts)}
	}
	n := &node{header: h, hdrLen: hdrLen}
	mh := message.Header{Header: h}
	mt, params, _ := mh.ContentType()
	mt = strings.ToLower(mt)
	if b := params["boundary"]; strings.HasPrefix(mt, "multipart/") && b != "" {
		if depth >= maxDepth {
			return nil, errStructure{fmt.Sprintf("multiparts nested deeper than %d", maxDepth)}
		}
		n.boundary = b
		n.header = textproto.Header{} // only its length is needed later
		return n, s.scanChildren(n, body, depth)
	}
	err := s.scanLeaf(n, mt, params, body)
	n.header = textproto.Header{} // described: only its length is needed later
	return n, err
}

func (s *scanner) scanChildren(n *node, body io.Reader, depth int) error {
	mr := textproto.NewMultipartReader(newHeaderGuard(body, n.boundary), n.boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return walkError(err)
		}
		c, err := s.scan(p.Header, headerLen(p.Header), p, depth+1)
		if err != nil {
			return err
		}
		n.children = append(n.children, c)
	}
	if len(n.children) == 0 {
		return errStructure{"a multipart without parts"}
	}
	return nil
}

// scanLeaf measures a leaf's raw and decoded sizes and describes it if it
// may leave the draft.
func (s *scanner) scanLeaf(n *node, mt string, params map[string]string, body io.Reader) error {
	s.leaves++
	att := describe(n.header, mt, params, s.leaves)
	raw := &countingReader{r: body}
	if att != nil {
		// A part whose encoding is unknown or broken stays in the draft
		// as it is.
		att.decodeFailed = true
		if dec, ok := decoder(att.encoding, raw); ok {
			size, err := io.Copy(io.Discard, dec)
			if raw.err != nil {
				return walkError(raw.err)
			}
			att.size, att.decodeFailed = size, err != nil
		}
	}
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return walkError(err)
	}
	n.bodyLen = raw.n
	if att != nil && !att.decodeFailed {
		n.att = att
	}
	return nil
}

// describe returns what Graph is told of a leaf part, or nil when the
// part is body text (text/* that is neither a named file nor marked as an
// attachment, RFC 2183), which stays in the draft.
func describe(h textproto.Header, mt string, params map[string]string, index int) *attachment {
	mh := message.Header{Header: h}
	disp, dparams, _ := mh.ContentDisposition()
	disp = strings.ToLower(disp)
	name := dparams["filename"] // RFC 2231 and RFC 2047 decoded
	if name == "" {
		name = params["name"]
	}
	if strings.HasPrefix(mt, "text/") && disp != "attachment" && name == "" {
		return nil
	}
	cid := strings.TrimSpace(h.Get("Content-Id"))
	cid = strings.TrimSuffix(strings.TrimPrefix(cid, "<"), ">")
	a := &attachment{
		index:       index,
		name:        fileName(name, mt, index),
		contentType: graphContentType(mt, params),
		contentID:   cid,
		// An inline part without a Content-ID cannot be referred to by
		// the HTML body (RFC 2392); Outlook would hide it, so it goes as
		// a plain attachment.
		inline:   cid != "" && disp != "attachment",
		encoding: strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))),
	}
	return a
}

// fileName makes the attachment's name: the part's own (control
// characters removed), else one from its position and type.
func fileName(name, mt string, index int) string {
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(name))
	if name != "" {
		return name
	}
	return fmt.Sprintf("part%d%s", index, extension(mt))
}

var knownExtensions = map[string]string{
	"message/rfc822": ".eml", "application/pdf": ".pdf", "image/png": ".png",
	"image/jpeg": ".jpg", "image/gif": ".gif", "text/plain": ".txt", "text/html": ".html",
	"text/calendar": ".ics", "application/zip": ".zip",
}

func extension(mt string) string {
	if ext, ok := knownExtensions[mt]; ok {
		return ext
	}
	return ".bin"
}

// graphContentType is the media type Graph is given: the type itself,
// and for text its charset (RFC 2046 §4.1.2), without which the text
// could not be read.
func graphContentType(mt string, params map[string]string) string {
	if mt == "" {
		mt = "application/octet-stream"
	}
	if cs := params["charset"]; strings.HasPrefix(mt, "text/") && cs != "" {
		if v := mime.FormatMediaType(mt, map[string]string{"charset": cs}); v != "" {
			return v
		}
	}
	return mt
}

// decoder undoes a part's Content-Transfer-Encoding (RFC 2045 §6).
func decoder(cte string, r io.Reader) (io.Reader, bool) {
	switch cte {
	case "base64":
		return base64Decoder(r), true
	case "quoted-printable":
		return qpDecoder(r), true
	case "", "7bit", "8bit", "binary":
		return r, true
	}
	return nil, false
}

// headerLen is the length of a header section as WriteHeader writes it.
func headerLen(h textproto.Header) int64 {
	var c countingWriter
	_ = textproto.WriteHeader(&c, h)
	return int64(c)
}

type countingReader struct {
	r   io.Reader
	n   int64
	err error // the first error other than io.EOF
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

// readRootHeader parses the fitted header section.
func readRootHeader(fitted []byte) (textproto.Header, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(fitted)))
	if err != nil {
		return h, errStructure{"the header section does not parse as MIME header fields"}
	}
	return h, nil
}
