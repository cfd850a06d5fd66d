package rcptfit

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

type message string

func (m message) Reader() (io.Reader, error) { return strings.NewReader(string(m)), nil }
func (m message) Size() int64                { return int64(len(m)) }

func TestRead(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", transport.MaxHeader) + "\r\n\r\nbody\r\n"
	tests := []struct {
		name       string
		msg        string
		wantHeader string
		wantBody   string
		wantErr    error
	}{
		{"header and body", "To: a@x.test\r\nSubject: s\r\n\r\nbody\r\n", "To: a@x.test\r\nSubject: s\r\n\r\n", "body\r\n", nil},
		{"blind recipient", "Subject: s\r\n\r\nbody\r\n", "Subject: s\r\nBcc: <b@x.test>\r\n\r\n", "body\r\n", nil},
		{"all header", "To: a@x.test\r\nSubject: s\r\n", "To: a@x.test\r\nSubject: s\r\n\r\n", "", nil},
		{"header too long", long, "", "", ErrHeaderTooLong},
		{"unparsable To", "To: <<<\r\n\r\nbody\r\n", "", "", ErrRecipientFields},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcpts := []string{"a@x.test"}
			if tt.name == "blind recipient" {
				rcpts = []string{"b@x.test"}
			}
			fit, err := Read(message(tt.msg), rcpts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !Unreadable(err) {
					t.Errorf("Unreadable(%v) = false", err)
				}
				return
			}
			body, _ := io.ReadAll(fit.Body)
			if string(fit.Header) != tt.wantHeader || string(body) != tt.wantBody {
				t.Errorf("got %q + %q, want %q + %q", fit.Header, body, tt.wantHeader, tt.wantBody)
			}
			if fit.Size != int64(len(fit.Header)+len(body)) {
				t.Errorf("Size = %d, want %d", fit.Size, len(fit.Header)+len(body))
			}
			if bytes.Contains(fit.Header, []byte("Bcc")) != (fit.Adj.Blind > 0) {
				t.Errorf("Adj = %+v", fit.Adj)
			}
		})
	}
}
