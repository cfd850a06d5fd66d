package bounce

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"
)

// dsn is a notification as a standard-library reader sees it.
type dsn struct {
	header  mail.Header
	parts   []parsedPart
	text    string                 // the notice, decoded
	message textproto.MIMEHeader   // per-message fields
	rcpts   []textproto.MIMEHeader // per-recipient fields, in order
	headers []byte                 // the attached header section, decoded; nil when absent
}

type parsedPart struct {
	header textproto.MIMEHeader
	body   []byte // decoded
}

// parseDSN checks the wire form of a notification (CRLF only, lines within
// 998 octets, 7-bit) and parses it with net/mail and mime/multipart.
func parseDSN(raw []byte) (*dsn, error) {
	if err := checkWireForm(raw); err != nil {
		return nil, err
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("net/mail: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("Content-Type: %w", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		return nil, fmt.Errorf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	d := &dsn{header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		body, err := decodePart(p)
		if err != nil {
			return nil, err
		}
		d.parts = append(d.parts, parsedPart{header: p.Header, body: body})
	}
	return d, d.interpretParts()
}

// checkWireForm: every line ends in CRLF, no CR or LF elsewhere, no line
// longer than 998 octets, no NUL, no octet beyond US-ASCII but UTF-8 in
// the To field (a sender's address in UTF-8, RFC 6532).
func checkWireForm(raw []byte) error {
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		return fmt.Errorf("does not end in CRLF")
	}
	for i, line := range bytes.SplitAfter(raw, []byte("\r\n")) {
		content := bytes.TrimSuffix(line, []byte("\r\n"))
		if len(content) > maxLine {
			return fmt.Errorf("line %d is %d octets long", i+1, len(content))
		}
		utf8To := bytes.HasPrefix(content, []byte("To: ")) && utf8.Valid(content)
		for _, c := range content {
			if c == '\r' || c == '\n' || c == 0 || c >= 0x80 && !utf8To {
				return fmt.Errorf("line %d has octet %#x: %q", i+1, c, content)
			}
		}
	}
	return nil
}

func decodePart(p *multipart.Part) ([]byte, error) {
	var r io.Reader = p
	switch cte := strings.ToLower(p.Header.Get("Content-Transfer-Encoding")); cte {
	case "", "7bit":
	case "quoted-printable":
		r = quotedprintable.NewReader(p)
	default:
		return nil, fmt.Errorf("Content-Transfer-Encoding %q", cte)
	}
	return io.ReadAll(r)
}

// interpretParts checks the parts' types and order (RFC 6522 §3) and
// parses the delivery-status fields.
func (d *dsn) interpretParts() error {
	want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	if len(d.parts) != 2 && len(d.parts) != 3 {
		return fmt.Errorf("%d parts", len(d.parts))
	}
	for i, p := range d.parts {
		mt, params, err := mime.ParseMediaType(p.header.Get("Content-Type"))
		if err != nil || mt != want[i] {
			return fmt.Errorf("part %d: Content-Type %q", i+1, p.header.Get("Content-Type"))
		}
		if i == 0 && !strings.EqualFold(params["charset"], "utf-8") {
			return fmt.Errorf("notice charset %q", params["charset"])
		}
	}
	d.text = string(d.parts[0].body)
	if len(d.parts) == 3 {
		d.headers = d.parts[2].body
	}
	blocks := strings.Split(strings.TrimSuffix(string(d.parts[1].body), "\r\n"), "\r\n\r\n")
	for i, block := range blocks {
		h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(block + "\r\n\r\n"))).ReadMIMEHeader()
		if err != nil {
			return fmt.Errorf("delivery-status block %d: %w", i+1, err)
		}
		if i == 0 {
			d.message = h
		} else {
			d.rcpts = append(d.rcpts, h)
		}
	}
	return nil
}

// keys returns the field names of h, sorted.
func keys(h map[string][]string) []string { return slices.Sorted(maps.Keys(h)) }
