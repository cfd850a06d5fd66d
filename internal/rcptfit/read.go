package rcptfit

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// ErrHeaderTooLong says the header section is longer than
// transport.MaxHeader: the relay cannot see every recipient field.
var ErrHeaderTooLong = errors.New("the header section exceeds transport.MaxHeader")

// Unreadable reports whether err (from Read) means the message can never
// be fitted: a permanent refusal, unlike a failure to read it.
func Unreadable(err error) bool {
	return errors.Is(err, ErrHeaderTooLong) || errors.Is(err, ErrRecipientFields)
}

// Fitted is a message whose header section was fitted to the envelope.
type Fitted struct {
	// Header is the fitted header section, its empty line included.
	Header []byte
	// Body reads the rest of the message, byte for byte.
	Body io.Reader
	// Size is the fitted message's size in bytes.
	Size int64
	Adj  Adjustment
}

// Read reads msg's header section, fits it to the envelope recipients
// rcpts (SMTP paths) and returns it with a reader of the rest. Errors
// for which Unreadable is true are the message's fault.
func Read(msg transport.Message, rcpts []string) (*Fitted, error) {
	r, err := msg.Reader()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(r)
	consumed, header, err := transport.ReadHeader(br, transport.MaxHeader)
	if err != nil {
		return nil, err
	}
	if len(header) < len(consumed) || !complete(header, br) {
		return nil, ErrHeaderTooLong
	}
	fitted, adj, err := Header(header, rcpts)
	if err != nil {
		return nil, err
	}
	return &Fitted{
		Header: fitted,
		Body:   br,
		Size:   int64(len(fitted)) + msg.Size() - int64(len(consumed)),
		Adj:    adj,
	}, nil
}

// complete reports whether header is the whole header section: it ends
// with the empty line, or the message ends with it.
func complete(header []byte, br *bufio.Reader) bool {
	if bytes.HasSuffix(header, []byte("\n\n")) || bytes.HasSuffix(header, []byte("\n\r\n")) || bytes.Equal(header, []byte("\r\n")) || bytes.Equal(header, []byte("\n")) {
		return true
	}
	_, err := br.Peek(1)
	return err == io.EOF
}
