package sendas

import (
	"io"
	"mime"
)

func mimeWordDecoder() mime.WordDecoder {
	return mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}
}
