package graph_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
)

// Helpers that build MIME messages for the tests and take apart what the
// sandbox delivered (with the standard library's parser, not the one the
// transport uses).

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// base64Lines encodes data in lines of 76 characters (RFC 2045 §6.8).
func base64Lines(data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	return b.String()
}

// filePart is a leaf part with a file, base64-encoded unless qp.
type filePart struct {
	contentType string // with parameters, as written
	disposition string // the whole Content-Disposition value; "" for none
	contentID   string
	data        []byte
	qp          bool
}

func (f filePart) String() string {
	var b strings.Builder
	b.WriteString("Content-Type: " + f.contentType + "\r\n")
	if f.disposition != "" {
		b.WriteString("Content-Disposition: " + f.disposition + "\r\n")
	}
	if f.contentID != "" {
		b.WriteString("Content-ID: <" + f.contentID + ">\r\n")
	}
	if f.qp {
		var body bytes.Buffer
		w := quotedprintable.NewWriter(&body)
		_, _ = w.Write(f.data)
		_ = w.Close()
		b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.ReplaceAll(strings.ReplaceAll(body.String(), "\r\n", "\n"), "\n", "\r\n"))
		return b.String()
	}
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n" + base64Lines(f.data))
	return b.String()
}

func textPart(subtype, text string) string {
	return "Content-Type: text/" + subtype + "; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
}

// multipartOf is a multipart entity with a preamble, parts and an epilogue.
func multipartOf(subtype, boundary string, parts ...string) string {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/" + subtype + "; boundary=\"" + boundary + "\"\r\n\r\n")
	b.WriteString("This is a multi-part message in MIME format.\r\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\nepilogue\r\n")
	return b.String()
}

// leaf is a delivered leaf part.
type leaf struct {
	mediaType, disposition, filename, contentID string
	content                                     []byte
}

// deliveredLeaves walks a delivered message.
func deliveredLeaves(t testing.TB, data []byte) []leaf {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out []leaf
	walkDelivered(t, m.Header, m.Body, &out)
	return out
}

type header interface{ Get(string) string }

func walkDelivered(t testing.TB, h header, body io.Reader, out *[]leaf) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("delivered multipart: %v", err)
			}
			walkDelivered(t, p.Header, p, out)
		}
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	l := leaf{mediaType: mt, contentID: strings.Trim(h.Get("Content-Id"), "<>")}
	if d, dp, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
		l.disposition = d
		l.filename = dp["filename"]
	}
	if l.filename == "" {
		l.filename = params["name"]
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(l.filename); err == nil {
		l.filename = dec
	}
	switch strings.ToLower(h.Get("Content-Transfer-Encoding")) {
	case "base64":
		l.content, err = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(raw)))
	case "quoted-printable":
		l.content, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
	default:
		l.content = raw
	}
	if err != nil {
		t.Fatalf("delivered part %q: %v", l.filename, err)
	}
	*out = append(*out, l)
}

// wantFile is an attachment the recipients must get.
type wantFile struct {
	name, mediaType, contentID string
	inline                     bool
	data                       []byte
}

// checkFiles compares the delivered files with want, by name.
func checkFiles(t *testing.T, leaves []leaf, want []wantFile) {
	t.Helper()
	byName := map[string]leaf{}
	files := 0
	for _, l := range leaves {
		if l.filename != "" {
			files++
			byName[l.filename] = l
		}
	}
	if files != len(want) {
		t.Errorf("%d files delivered, want %d", files, len(want))
	}
	for _, w := range want {
		got, ok := byName[w.name]
		switch {
		case !ok:
			t.Errorf("file %q not delivered (got %v)", w.name, names(leaves))
		case !bytes.Equal(got.content, w.data):
			t.Errorf("file %q: %d bytes delivered differ from the %d sent", w.name, len(got.content), len(w.data))
		case got.mediaType != w.mediaType || got.contentID != w.contentID || (got.disposition == "inline") != w.inline:
			t.Errorf("file %q delivered as %s cid %q disposition %q; want %s cid %q inline %v",
				w.name, got.mediaType, got.contentID, got.disposition, w.mediaType, w.contentID, w.inline)
		}
	}
}

func names(leaves []leaf) []string {
	var n []string
	for _, l := range leaves {
		n = append(n, fmt.Sprintf("%q(%s)", l.filename, l.mediaType))
	}
	return n
}

// texts returns the delivered body texts (leaves without a file name).
func texts(leaves []leaf) []string {
	var out []string
	for _, l := range leaves {
		if l.filename == "" {
			out = append(out, l.mediaType+": "+string(l.content))
		}
	}
	return out
}
