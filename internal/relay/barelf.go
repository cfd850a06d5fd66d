package relay

import "io"

// bareLFDots completes go-smtp's reading of DATA for lines that end in a
// bare LF. RFC 5321 §2.3.8 allows only CRLF, but scripts and some devices
// send LF alone; go-smtp ends lines (and removes the dot that the client
// doubled at the start of a line, §4.5.2) only after CRLF, while the relay
// writes a bare LF upstream as CRLF. A client that doubled the dot after a
// bare LF (Python's smtplib with bytes) then had its doubled dot
// delivered. Like Postfix's smtpd_forbid_bare_newline = normalize, a line
// after a bare LF is treated as a line: its leading dot is undone. The end
// of the data still needs CRLF.CRLF, so a bare "LF.LF" ends nothing (no
// SMTP smuggling). BDAT has no dot-stuffing and is not read through this.
type bareLFDots struct {
	r      io.Reader
	prevCR bool // the last byte read was CR
	lineLF bool // the last byte read ended a line with a bare LF
}

func (b *bareLFDots) Read(p []byte) (int, error) {
	for {
		n, err := b.r.Read(p)
		kept := 0
		for _, c := range p[:n] {
			if b.lineLF && c == '.' {
				b.lineLF = false
				continue // the client's stuffed dot
			}
			p[kept] = c
			kept++
			b.lineLF = c == '\n' && !b.prevCR
			b.prevCR = c == '\r'
		}
		if kept > 0 || err != nil || n == 0 {
			return kept, err
		}
	}
}
