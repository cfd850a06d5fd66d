package rcptfit

import (
	"bytes"
	"errors"
	"net/mail"
	"strings"
)

// ErrRecipientFields says a header section cannot be adjusted to the
// envelope with certainty (see the package comment).
var ErrRecipientFields = errors.New("a To or Cc field does not parse as an address list")

// field is one header field: its lines as received, continuation lines
// included (RFC 5322 §2.2.3).
type field struct {
	name string // as written, without surrounding white space
	raw  []byte
}

// value returns the field's unfolded body.
func (f field) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return string(v)
}

func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// splitHeader splits a header section into its fields and what ends it
// (the empty line, or nothing when the message is all header). Lines
// before the first field that start with white space are kept as a
// nameless field.
func splitHeader(header []byte) (fields []field, end []byte) {
	for rest := header; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		switch {
		case len(bytes.TrimRight(line, "\r\n")) == 0:
			return fields, line
		case (line[0] == ' ' || line[0] == '\t') && len(fields) > 0:
			last := &fields[len(fields)-1]
			last.raw = append(last.raw, line...)
		default:
			name, _, _ := bytes.Cut(line, []byte(":"))
			fields = append(fields, field{name: string(bytes.TrimSpace(name)), raw: bytes.Clone(line)})
		}
	}
	return fields, nil
}

// addressKey is the form in which addresses are compared: Exchange
// treats addresses case-insensitively, local part included.
func addressKey(addr string) string { return strings.ToLower(addr) }

// Key returns the comparison key of an SMTP path (as the relay
// passes it: a Dot-string or Quoted-string local part, RFC 5321 §4.1.2),
// and false when it is no address a header field could name.
func Key(path string) (string, bool) {
	a, err := mail.ParseAddress("<" + path + ">")
	if err != nil {
		return "", false
	}
	return addressKey(a.Address), true
}

// Adjustment is what Header changed, for the log.
type Adjustment struct {
	Blind   int // envelope recipients added as Bcc
	Dropped int // To/Cc addresses outside the envelope removed
	Bccs    int // client Bcc fields removed
}

// Header adjusts a header section so that Graph, which sends to To, Cc
// and Bcc, sends to exactly the envelope recipients rcpts (SMTP paths;
// see the package comment). header is the whole section, ending with its
// empty line when it has one.
func Header(header []byte, rcpts []string) ([]byte, Adjustment, error) {
	var adj Adjustment
	fields, end := splitHeader(header)
	eol := lineEnding(header)
	inEnvelope := map[string]bool{}
	for _, r := range rcpts {
		k, _ := Key(r)
		inEnvelope[k] = true
	}
	named := map[string]bool{} // envelope recipients To or Cc keeps
	var out []field
	// Bcc fields are dropped whatever they hold.
	for _, name := range []string{"To", "Cc"} {
		if err := checkAddressFields(fields, name); err != nil {
			return nil, adj, err
		}
	}
	for i, f := range fields {
		switch {
		case f.is("Bcc"):
			adj.Bccs++
		case f.is("To") || f.is("Cc"):
			if firstOf(fields, f.name) != i {
				continue // merged into the first
			}
			nf, dropped := fitRecipientField(fields, f, inEnvelope, named, eol)
			adj.Dropped += dropped
			if nf != nil {
				out = append(out, *nf)
			}
		default:
			out = append(out, f)
		}
	}
	var blind []string
	for _, r := range rcpts {
		if k, _ := Key(r); !named[k] {
			named[k] = true // the envelope can name one address twice
			blind = append(blind, "<"+r+">")
		}
	}
	adj.Blind = len(blind)
	var b bytes.Buffer
	for _, f := range out {
		b.Write(f.raw)
	}
	if len(blind) > 0 {
		b.WriteString("Bcc: " + strings.Join(blind, ","+eol+" ") + eol)
	}
	if end == nil {
		end = []byte(eol) // a message of header only gets its empty line
	}
	b.Write(end)
	return b.Bytes(), adj, nil
}

// checkAddressFields parses every field called name as an address list.
func checkAddressFields(fields []field, name string) error {
	for _, f := range fields {
		if f.is(name) {
			if _, err := addressList(f.value()); err != nil {
				return ErrRecipientFields
			}
		}
	}
	return nil
}

// addressList parses a field body; an empty one names nobody.
func addressList(v string) ([]*mail.Address, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	return mail.ParseAddressList(v)
}

func firstOf(fields []field, name string) int {
	for i, f := range fields {
		if f.is(name) {
			return i
		}
	}
	return -1
}

// fitRecipientField returns the To or Cc field to send in place of every
// field called like first (nil: none), and how many addresses outside
// the envelope it dropped. Addresses it keeps are marked in named.
func fitRecipientField(fields []field, first field, inEnvelope, named map[string]bool, eol string) (*field, int) {
	var kept []*mail.Address
	instances, dropped := 0, 0
	for _, f := range fields {
		if !f.is(first.name) {
			continue
		}
		instances++
		list, _ := addressList(f.value()) // checked by checkAddressFields
		for _, a := range list {
			k := addressKey(a.Address)
			if !inEnvelope[k] {
				dropped++
				continue
			}
			if !named[k] {
				named[k] = true
				kept = append(kept, a)
			}
		}
	}
	if instances == 1 && dropped == 0 {
		return &first, 0 // byte for byte
	}
	if len(kept) == 0 {
		return nil, dropped
	}
	parts := make([]string, len(kept))
	for i, a := range kept {
		parts[i] = a.String()
	}
	return &field{name: first.name, raw: []byte(first.name + ": " + strings.Join(parts, ","+eol+" ") + eol)}, dropped
}

// lineEnding returns the header's line ending: CRLF as RFC 5322 §2.1 and
// SMTP (RFC 5321 §2.3.8) have it, or LF for a message stored with bare
// line ends.
func lineEnding(header []byte) string {
	i := bytes.IndexByte(header, '\n')
	if i > 0 && header[i-1] == '\r' || i < 0 {
		return "\r\n"
	}
	return "\n"
}
