package bounce

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, message string
		section       string            // what section(∞) returns
		get           map[string]string // Get results
	}{
		{"plain", "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
			"From: a@example.com\r\nSubject: hi\r\n", map[string]string{"from": "a@example.com", "SUBJECT": "hi", "To": ""}},
		{"folded", "Subject: a\r\n  b\r\n\tc\r\nTo: x\r\n\r\n",
			"Subject: a\r\n  b\r\n\tc\r\nTo: x\r\n", map[string]string{"Subject": "a  b\tc", "To": "x"}},
		{"LF endings", "Subject: hi\n\tthere\n\nbody\n",
			"Subject: hi\r\n\tthere\r\n", map[string]string{"Subject": "hi\tthere"}},
		{"first of repeated fields", "X-A: 1\r\nX-A: 2\r\n",
			"X-A: 1\r\nX-A: 2\r\n", map[string]string{"X-A": "1"}},
		{"obsolete space before colon", "Subject : old\r\n\r\n",
			"Subject : old\r\n", map[string]string{"Subject": "old"}},
		{"empty value", "X-Empty:\r\nX-Spaces:   \r\n",
			"X-Empty:\r\nX-Spaces:   \r\n", map[string]string{"X-Empty": "", "X-Spaces": ""}},
		{"no separator, EOF", "Subject: hi", "Subject: hi\r\n", map[string]string{"Subject": "hi"}},
		{"body line ends the section", "Subject: hi\r\nnot a field\r\nX-After: no\r\n",
			"Subject: hi\r\n", map[string]string{"X-After": ""}},
		{"space in a field name is no field", "Subject: hi\r\nBad Name: x\r\n", "Subject: hi\r\n", nil},
		{"colon first is no field", ": x\r\nSubject: hi\r\n", "", nil},
		{"continuation without a field", " x: y\r\nSubject: hi\r\n", "", nil},
		{"empty input", "", "", nil},
		{"separator only", "\r\nSubject: body\r\n", "", nil},
		{"whitespace-only line continues", "Subject: a\r\n \r\nTo: b\r\n\r\n", "Subject: a\r\n \r\nTo: b\r\n", map[string]string{"To": "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := readHeader(t, tc.message)
			got, cut := h.section(readLimit)
			if string(got) != tc.section || cut {
				t.Errorf("section = %q, %v; want %q", got, cut, tc.section)
			}
			for k, want := range tc.get {
				if got := h.Get(k); got != want {
					t.Errorf("Get(%q) = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestReadHeaderLimit: a section beyond the read limit is cut before the
// field the limit falls in — also inside one endless line — and the rest
// of the input is not read.
func TestReadHeaderLimit(t *testing.T) {
	field := "X-Filler: " + strings.Repeat("x", 100) + "\r\n"
	n := readLimit/len(field) + 10
	tests := map[string]string{
		"many fields":  strings.Repeat(field, n),
		"endless line": "Subject: hi\r\nX-Long: " + strings.Repeat("y", 2*readLimit),
		"endless fold": "Subject: hi\r\nX-Fold: a\r\n" + strings.Repeat("\tb\r\n", readLimit),
	}
	for name, message := range tests {
		t.Run(name, func(t *testing.T) {
			r := &countingReader{r: strings.NewReader(message + "\r\n\r\nbody")}
			h, err := ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			got, cut := h.section(2 * readLimit)
			if !cut || len(got) > readLimit {
				t.Errorf("section of %d bytes, cut %v", len(got), cut)
			}
			if !strings.HasPrefix(message, string(got)) || (len(got) > 0 && !strings.HasSuffix(string(got), "\r\n")) {
				t.Error("the section is not a prefix of whole lines")
			}
			if len(got) == 0 || message[len(got)] != 'X' {
				t.Errorf("cut inside a field: the next byte is %q", message[len(got)])
			}
			if r.n > readLimit+8192 {
				t.Errorf("read %d bytes for a limit of %d", r.n, readLimit)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadHeaderErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	if _, err := ReadHeader(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("error %v, want %v", err, boom)
	}
	r := io.MultiReader(strings.NewReader("Subject: hi\r\n"), iotest.ErrReader(boom))
	if _, err := ReadHeader(r); !errors.Is(err, boom) {
		t.Errorf("error after a field %v, want %v", err, boom)
	}
	// Reading one byte at a time changes nothing.
	h, err := ReadHeader(iotest.OneByteReader(strings.NewReader("Subject: hi\r\n there\r\n\r\nbody")))
	if err != nil || h.Get("Subject") != "hi there" {
		t.Errorf("one byte at a time: %q, %v", h.Get("Subject"), err)
	}
}

func TestHeaderNil(t *testing.T) {
	var h *Header
	if h.Get("Subject") != "" {
		t.Error("nil header has a Subject")
	}
	if got, cut := h.section(100); got != nil || cut {
		t.Error("nil header has a section")
	}
}

// FuzzReadHeader: the section ReadHeader keeps is a prefix of the input
// with its line endings made CRLF, made of whole fields, and it stops
// exactly where the header ends: at an empty line, at a line that is no
// field, or at the end of the input.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{originalHeader + "\r\nbody", "Subject: hi\n there\n\nbody", "a: b\rc: d\r\n", " x\r\n",
		"Subject: hi\r\nnot a field\r\n", "X: y", "\r\n", ":\r\n", "A :b\r\n\tc\r\n \r\n\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, message string) {
		h, err := ReadHeader(strings.NewReader(message))
		if err != nil {
			t.Fatal(err)
		}
		section, cut := h.section(readLimit)
		norm := crlfLines(message)
		if !strings.HasPrefix(norm, string(section)) {
			t.Fatalf("section %q is not a prefix of %q", section, norm)
		}
		if bytes.Contains(section, []byte("\r\n\r\n")) || bytes.HasPrefix(section, []byte("\r\n")) {
			t.Fatalf("section %q goes past an empty line", section)
		}
		if cut {
			return // only for inputs beyond the read limit
		}
		rest := norm[len(section):]
		line, _, _ := strings.Cut(rest, "\r\n")
		if _, isField := fieldName([]byte(line)); rest != "" && line != "" && (isField || continues([]byte(line)) && len(section) > 0) {
			t.Fatalf("stopped before line %q, which belongs to the header", line)
		}
		for _, f := range h.fields {
			if _, ok := fieldName(bytes.SplitN(f.raw, []byte("\r\n"), 2)[0]); !ok || !bytes.HasSuffix(f.raw, []byte("\r\n")) {
				t.Fatalf("field %q", f.raw)
			}
		}
	})
}

// crlfLines ends every line of s with CRLF, as ReadHeader keeps lines.
func crlfLines(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line == "" {
			continue
		}
		b.WriteString(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r") + "\r\n")
	}
	return b.String()
}
