package engine

import (
	"io"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

// Rewinder returns a function that rewinds the messages' bodies to where
// they are now, and whether it can: when all of them are io.Seekers
// (bytes.Reader, os.File). An engine whose transaction was rolled back
// after it read a body can run the message again only then.
func Rewinder(msgs []*store.NewMessage) (rewind func() bool, ok bool) {
	type mark struct {
		body io.Seeker
		at   int64
	}
	cannot := func() bool { return false }
	var marks []mark
	for _, m := range msgs {
		if m.Body == nil {
			continue
		}
		body, ok := m.Body.(io.Seeker)
		if !ok {
			return cannot, false
		}
		at, err := body.Seek(0, io.SeekCurrent)
		if err != nil {
			return cannot, false
		}
		marks = append(marks, mark{body, at})
	}
	return func() bool {
		for _, mk := range marks {
			if _, err := mk.body.Seek(mk.at, io.SeekStart); err != nil {
				return false
			}
		}
		return true
	}, true
}
