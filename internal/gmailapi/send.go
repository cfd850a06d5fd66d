package gmailapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// MaxMessageBytes is the Gmail API's limit for a message sent by media
// upload (users.messages.send: "Maximum file size: 35MB").
const MaxMessageBytes = 35 << 20

// maxConcurrentPerMailbox bounds the sends per mailbox in flight from
// this process. Google enforces a per-user concurrent request limit,
// shared by every API client of the user, without publishing it; what it
// publishes is the per-user rate: 6,000 quota units a minute, 100 of them
// per messages.send (Gmail API usage limits), so one send a second. A
// send takes about that long, so more than two in flight only buys 429s
// from the rate limit, while two let small messages pass beside one large
// upload and leave room for the user's other clients.
const maxConcurrentPerMailbox = 2

// SendsPerMailbox is how many sends of a mailbox may be in flight across
// all the relay's instances.
const SendsPerMailbox = maxConcurrentPerMailbox

// processSlots are shared by every Transport of the process, so that a
// reload cannot raise the concurrency.
var processSlots = httpsend.NewSlots(maxConcurrentPerMailbox)

// maxAnswerBody bounds how much of an answer is read.
const maxAnswerBody = 64 << 10

// fit reads the message and fits its header section to the envelope.
func (d *delivery) fit(msg transport.Message) (*rcptfit.Fitted, *httpsend.Failure) {
	if msg.Size() > MaxMessageBytes {
		return nil, httpsend.Local(errTooLarge, nil)
	}
	fit, f := d.Fit(msg)
	if f != nil {
		return nil, f
	}
	if fit.Size > MaxMessageBytes {
		return nil, httpsend.Local(errTooLarge, nil) // the added Bcc field tipped it over
	}
	return fit, nil
}

// send uploads the message, holding one of the mailbox's request slots,
// with a fresh token once more if the Gmail API refused the first. first
// is the fitted message for the first request; a second one reads the
// message again.
func (d *delivery) send(ctx context.Context, msg transport.Message, first *rcptfit.Fitted) (string, *httpsend.Failure) {
	release, err := d.t.Acquire(ctx, processSlots)
	if err != nil {
		return "", httpsend.Busy(providerName, err)
	}
	defer release()
	next := first
	return httpsend.SendWithToken(ctx, d.t.Tokens, d.log, func(token string) (string, *httpsend.Failure) {
		fit := next
		next = nil
		if fit == nil {
			var f *httpsend.Failure
			if fit, f = d.fit(msg); f != nil {
				return "", f
			}
		}
		return d.post(ctx, token, fit)
	})
}

// post makes one messages.send request, streaming the fitted message as
// its body, and returns the reply for the client.
func (d *delivery) post(ctx context.Context, token string, fit *rcptfit.Fitted) (string, *httpsend.Failure) {
	u := d.t.baseURL() + "/upload/gmail/v1/users/" + url.PathEscape(d.t.Account) + "/messages/send?uploadType=media"
	body := &countingReader{r: io.MultiReader(bytes.NewReader(fit.Header), fit.Body), want: fit.Size}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return "", httpsend.Local(httpsend.ReplyLocal, err)
	}
	req.ContentLength = fit.Size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "message/rfc822")
	resp, f := httpsend.Do(d.t.client(), req, providerName)
	if f != nil {
		if body.err != nil {
			// The message could not be read: the relay's fault, not the
			// connection's.
			return "", httpsend.Local(httpsend.ReplyLocal, fmt.Errorf("reading the message: %w", body.err))
		}
		return "", f
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", classifyAPI(readAPIError(resp, time.Now()))
	}
	var sent struct {
		ID string `json:"id"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBody)).Decode(&sent)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBody))
	id := transport.Printable(sent.ID, 100)
	if id == "" {
		id = "not given"
	}
	return "250 2.0.0 Accepted by the Gmail API (id " + id + ")", nil
}

// errShortMessage says a message ended before its size.
var errShortMessage = errors.New("the message is shorter than its recorded size")

// countingReader passes the message to the HTTP client and remembers why
// reading it failed, so that a failure of the relay's own storage is not
// taken for a lost connection.
type countingReader struct {
	r    io.Reader
	want int64
	n    int64
	err  error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case err == io.EOF && c.n < c.want:
		c.err = errShortMessage
	case err != nil && err != io.EOF:
		c.err = err
	}
	return n, err
}
