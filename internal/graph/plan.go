package graph

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"slices"

	"github.com/emersion/go-message/textproto"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
)

// plan says how a message too large for sendMail goes out: which leaf
// parts leave the draft, in the message's order.
type plan struct {
	root    *node
	header  []byte // the fitted header section
	atts    []*attachment
	draft   int64 // estimated draft size
	largest *attachment
}

// errDraftTooLarge: what stays in the draft exceeds Graph's request limit.
type errDraftTooLarge struct{ size int64 }

func (e errDraftTooLarge) Error() string {
	return fmt.Sprintf("the message without its attachments is %d bytes; a Microsoft Graph draft takes at most %d", e.size, maxMessageBytes)
}

// errAttachmentTooLarge: one attachment exceeds Graph's 150 MB.
type errAttachmentTooLarge struct{ att *attachment }

func (e errAttachmentTooLarge) Error() string {
	return fmt.Sprintf("attachment %s exceeds Microsoft Graph's %d bytes per attachment", e.att, maxAttachmentBytes)
}

// planSplit reads the fitted message once and chooses the parts that
// leave the draft: the largest first, until the rest fits in budget bytes.
// Body text never leaves.
func planSplit(fit *rcptfit.Fitted, budget int64) (*plan, error) {
	h, err := readRootHeader(fit.Header)
	if err != nil {
		return nil, err
	}
	var s scanner
	root, err := s.scan(h, int64(len(fit.Header)), source{fit.Body}, 0)
	if err != nil {
		return nil, err
	}
	p := &plan{root: root, header: fit.Header}
	var candidates []*node
	collectLeaves(root, func(n *node) {
		if n.att != nil {
			candidates = append(candidates, n)
		}
	})
	slices.SortStableFunc(candidates, func(a, b *node) int { return cmp.Compare(b.bodyLen, a.bodyLen) })
	for _, c := range candidates {
		if p.draftSize() <= budget {
			break
		}
		if c.att.size > maxAttachmentBytes {
			return nil, errAttachmentTooLarge{c.att}
		}
		c.extract = true
	}
	if p.draft = p.draftSize(); p.draft > budget {
		return nil, errDraftTooLarge{p.draft}
	}
	collectLeaves(root, func(n *node) {
		if n.extract {
			p.atts = append(p.atts, n.att)
		}
	})
	return p, nil
}

func (p *plan) draftSize() int64 {
	if !p.root.kept() {
		return int64(len(p.header)) + int64(len(emptyBodyType))
	}
	return p.root.draftSize()
}

func collectLeaves(n *node, f func(*node)) {
	if n.boundary == "" {
		f(n)
		return
	}
	for _, c := range n.children {
		collectLeaves(c, f)
	}
}

// emptyBodyType replaces the Content-Type of a message all of whose parts
// left the draft: its body is then empty text.
const emptyBodyType = "Content-Type: text/plain; charset=us-ascii\r\n"

// writeDraft writes the draft (the second pass): the fitted header and
// every part the plan keeps, as read.
func (p *plan) writeDraft(w io.Writer, fit *rcptfit.Fitted) error {
	if !p.root.kept() {
		h, err := readRootHeader(fit.Header)
		if err != nil {
			return err
		}
		h.Del("Content-Type")
		h.Del("Content-Transfer-Encoding")
		h.AddRaw([]byte(emptyBodyType))
		return textproto.WriteHeader(w, h)
	}
	if _, err := w.Write(fit.Header); err != nil {
		return err
	}
	return p.writeBody(w, p.root, source{fit.Body})
}

func (p *plan) writeBody(w io.Writer, n *node, body io.Reader) error {
	if n.boundary == "" {
		if _, err := io.Copy(w, body); err != nil {
			return walkError(err)
		}
		return nil
	}
	first := true
	err := eachChild(n, body, func(c *node, part *textproto.Part) error {
		if !c.kept() {
			return nil
		}
		if _, err := io.WriteString(w, n.delimiter(first)); err != nil {
			return err
		}
		first = false
		if err := textproto.WriteHeader(w, part.Header); err != nil {
			return err
		}
		return p.writeBody(w, c, part)
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, n.closeDelimiter())
	return err
}

// eachChild walks n's parts again, in step with the first pass.
func eachChild(n *node, body io.Reader, f func(c *node, part *textproto.Part) error) error {
	mr := textproto.NewMultipartReader(newHeaderGuard(body, n.boundary), n.boundary)
	for _, c := range n.children {
		part, err := mr.NextPart()
		if err != nil {
			return errChanged(err)
		}
		if err := f(c, part); err != nil {
			return err
		}
	}
	return nil
}

func errChanged(err error) error {
	var se sourceError
	if errors.As(err, &se) {
		return se
	}
	return sourceError{fmt.Errorf("the message differs from its first reading (%s)", structureError(err).reason)}
}

// eachAttachment walks the message (the third pass) and calls f with each
// attachment that leaves the draft and a reader of its decoded content.
func (p *plan) eachAttachment(fit *rcptfit.Fitted, f func(a *attachment, content io.Reader) error) error {
	return walkExtracted(p.root, source{fit.Body}, f)
}

func walkExtracted(n *node, body io.Reader, f func(a *attachment, content io.Reader) error) error {
	if n.boundary == "" {
		if !n.extract {
			return nil
		}
		dec, _ := decoder(n.att.encoding, body)
		return f(n.att, dec)
	}
	return eachChild(n, body, func(c *node, part *textproto.Part) error {
		return walkExtracted(c, part, f)
	})
}

// base64Decoder decodes base64 content whose lines may also hold spaces
// or tabs (seen in the wild; the standard decoder skips only CR and LF).
func base64Decoder(r io.Reader) io.Reader {
	return base64.NewDecoder(base64.StdEncoding, blankToNewline{r})
}

type blankToNewline struct{ r io.Reader }

func (b blankToNewline) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	for i, c := range p[:n] {
		if c == ' ' || c == '\t' {
			p[i] = '\n'
		}
	}
	return n, err
}

func qpDecoder(r io.Reader) io.Reader { return quotedprintable.NewReader(r) }

// draftBytes renders the draft into memory: it fits one request, or
// the error says how large it came out.
func (p *plan) draftBytes(fit *rcptfit.Fitted) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(min(p.draft+4<<10, maxMessageBytes)))
	lw := &limitWriter{w: &buf, limit: maxMessageBytes}
	if err := p.writeDraft(lw, fit); err != nil {
		return nil, err
	}
	if lw.n > lw.limit {
		return nil, errDraftTooLarge{size: lw.n}
	}
	return buf.Bytes(), nil
}

// limitWriter writes up to limit bytes and counts the rest.
type limitWriter struct {
	w        io.Writer
	n, limit int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+int64(len(p)) <= l.limit {
		if _, err := l.w.Write(p); err != nil {
			return 0, err
		}
	}
	l.n += int64(len(p))
	return len(p), nil
}
