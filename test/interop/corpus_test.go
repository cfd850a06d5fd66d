package interop

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
)

// header is the header section every test message starts with: complete,
// so that no client adds a Date, Message-ID or From of its own (msmtp
// does when one is missing).
func header(s submission, subject string, extra ...string) string {
	lines := []string{
		"Date: Thu, 26 Nov 2026 04:00:00 +0000",
		"Message-ID: " + s.messageID(),
		"From: Alice <" + s.from + ">",
		"To: " + strings.Join(s.rcpts, ", "),
		"Subject: " + subject + " (" + s.id + ")",
		"MIME-Version: 1.0",
	}
	return strings.Join(append(lines, extra...), "\r\n") + "\r\n\r\n"
}

// dotLines need dot-stuffing on the wire (RFC 5321 §4.5.2): a lone "."
// would end the message early if a client or the relay got it wrong.
var dotLines = []string{
	".",
	"..",
	"...",
	".leading dot",
	"..two leading dots",
	". a dot and a space",
	"",
	"\tindented with a tab, trailing spaces   ",
	"a line after the dots",
}

// basicMessage is a plain ASCII message with CRLF line endings.
func basicMessage(s submission) []byte {
	body := "This message travels through oauthrelay unchanged.\r\n" + strings.Join(dotLines, "\r\n") + "\r\nlast line\r\n"
	return []byte(header(s, "interop", "Content-Type: text/plain; charset=us-ascii") + body)
}

// lfMessage is basicMessage with Unix line endings.
func lfMessage(s submission) []byte {
	return bytes.ReplaceAll(basicMessage(s), []byte("\r\n"), []byte("\n"))
}

// eightBitMessage has a body of 8-bit octets (RFC 6152): UTF-8 text and
// every octet from 0x80 to 0xFF.
func eightBitMessage(s submission) []byte {
	var b bytes.Buffer
	b.WriteString(header(s, "8bit", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"))
	b.WriteString("Grüße aus Köln — 東京から ✓\r\n.äöü after a dot\r\n")
	b.WriteString("every 8-bit octet: ")
	for c := 0x80; c <= 0xff; c++ {
		b.WriteByte(byte(c))
	}
	b.WriteString("\r\n" + strings.Join(dotLines, "\r\n") + "\r\n")
	return b.Bytes()
}

// utf8Message has UTF-8 in its header fields (RFC 6532), as SMTPUTF8
// mail does.
func utf8Message(s submission) []byte {
	return []byte(header(s, "Grüße", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit") + "Hej Björn!\r\n" + strings.Join(dotLines, "\r\n") + "\r\n")
}

// largeSize is the size of the large message's body: 20 MiB, under the
// relay's default max_message_size of 35 MB.
const largeSize = 20 << 20

// largeMessage is a 20 MiB message of 76-character lines (like base64
// attachments); lines starting with a dot are spread through it, so
// dot-stuffing is exercised across every buffer boundary on the way.
func largeMessage(s submission) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(11, 20))
	var b bytes.Buffer
	b.Grow(largeSize + 4096)
	b.WriteString(header(s, "large", "Content-Type: text/plain; charset=us-ascii"))
	line := make([]byte, 76)
	for n := 0; b.Len() < largeSize; n++ {
		for i := range line {
			line[i] = alphabet[rng.IntN(len(alphabet))]
		}
		switch {
		case n%1009 == 0:
			b.WriteString(".")
		case n%97 == 0:
			b.WriteByte('.')
			b.Write(line[1:])
		default:
			b.Write(line)
		}
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "end of the large message\r\n")
	return b.Bytes()
}
