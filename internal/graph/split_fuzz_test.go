package graph

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
)

// FuzzSplit splits arbitrary messages with a small draft budget: no
// panic, and whatever splits can be walked again: the draft fits, each
// attachment yields exactly its size.
func FuzzSplit(f *testing.F) {
	seeds := []string{
		"Subject: x\r\n\r\nhello",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n" +
			"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''%C3%A9.pdf\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n--b--\r\n",
		"Content-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<img src=cid:a>\r\n--r\r\n" +
			"Content-Type: image/png\r\nContent-ID: <a>\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=00=01=02=03=04=05=06=07=08=09=0A=0B=0C=0D=0E=0F" +
			"=10=11=12=13=14=15=16=17=18=19=1A=1B=1C=1D=1E=1F\r\n--r--\r\n",
		"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n\r\nplain\r\n--a--\r\n" +
			"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n" + strings.Repeat("inner body ", 20) + "\r\n--o--\r\n",
		"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n" + strings.Repeat("QUJD", 40),
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/gif\r\n\r\n" + strings.Repeat("x", 200),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		header, body, ok := strings.Cut(msg, "\r\n\r\n")
		if !ok {
			return
		}
		fitted := func() *rcptfit.Fitted {
			return &rcptfit.Fitted{Header: []byte(header + "\r\n\r\n"), Body: strings.NewReader(body), Size: int64(len(msg))}
		}
		const budget = 128
		p, err := planSplit(fitted(), budget)
		if err != nil {
			var st errStructure
			var dr errDraftTooLarge
			var at errAttachmentTooLarge
			if !errors.As(err, &st) && !errors.As(err, &dr) && !errors.As(err, &at) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		var draft bytes.Buffer
		if err := p.writeDraft(&draft, fitted()); err != nil {
			t.Fatalf("draft: %v", err)
		}
		if int64(draft.Len()) > p.draft+int64(len(emptyBodyType)) && int64(draft.Len()) > budget {
			t.Fatalf("draft of %d bytes over the estimate %d and the budget", draft.Len(), p.draft)
		}
		seen := 0
		err = p.eachAttachment(fitted(), func(a *attachment, content io.Reader) error {
			seen++
			n, err := io.Copy(io.Discard, content)
			if err != nil || n != a.size {
				t.Fatalf("attachment %s: %d bytes, %v", a, n, err)
			}
			return nil
		})
		if err != nil || seen != len(p.atts) {
			t.Fatalf("%d of %d attachments walked: %v", seen, len(p.atts), err)
		}
	})
}
