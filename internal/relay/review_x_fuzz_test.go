package relay

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// bareLFDotsModel: a '.' that directly follows an LF not preceded by CR
// is removed; nothing else changes.
func bareLFDotsModel(in []byte) []byte {
	var out []byte
	for i, c := range in {
		if c == '.' && i > 0 && in[i-1] == '\n' && (i < 2 || in[i-2] != '\r') {
			continue
		}
		out = append(out, c)
	}
	return out
}

// FuzzBareLFDots: whatever the chunking of the reads, bareLFDots removes
// exactly the dots the model removes, never adds a byte, and never turns
// the data into one that holds CRLF.CRLF when the input did not.
func FuzzBareLFDots(f *testing.F) {
	for _, s := range []string{"a\n..b\n", "a\n.\r\n", "\r\n.\n", "\n.\n.\n", "x\r\n..\r\n", "\n\n..\n", "\r\n\n.\r\n"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		want := bareLFDotsModel(in)
		for _, r := range []io.Reader{
			bytes.NewReader(in),
			iotest.OneByteReader(bytes.NewReader(in)),
			iotest.HalfReader(bytes.NewReader(in)),
			iotest.DataErrReader(bytes.NewReader(in)),
			io.LimitReader(bytes.NewReader(in), int64(len(in))),
		} {
			buf := make([]byte, int(chunk)%7+1)
			var got []byte
			br := &bareLFDots{r: r}
			for {
				n, err := br.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("bareLFDots(%q) = %q, want %q", in, got, want)
			}
		}
		if !bytes.Contains(in, []byte("\r\n.\r\n")) && bytes.Contains(want, []byte("\r\n.\r\n")) {
			t.Fatalf("bareLFDots(%q) made an end of data: %q", in, want)
		}
	})
}
