package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// maxRequestBytes is Graph's request body limit (413 beyond); the message
// travels in base64, so sendMail (and a MIME draft) takes maxMessageBytes
// of it.
const (
	maxRequestBytes = 4 << 20
	maxMessageBytes = maxRequestBytes / 4 * 3
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// encodeSendMail reads a fitted message that fits sendMail and encodes it
// in base64, as sendMail takes MIME.
func encodeSendMail(fit *rcptfit.Fitted) ([]byte, *failure) {
	raw := bytes.NewBuffer(make([]byte, 0, fit.Size))
	raw.Write(fit.Header)
	if _, err := io.Copy(raw, fit.Body); err != nil {
		return nil, httpsend.Local(httpsend.ReplyLocal, err)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(raw.Len()))
	base64.StdEncoding.Encode(out, raw.Bytes())
	return out, nil
}

// sendMail posts the message, holding one of the mailbox's request slots.
func (d *delivery) sendMail(ctx context.Context, payload []byte) (reply string, f *failure) {
	release, err := d.t.Acquire(ctx, processSlots)
	if err != nil {
		return "", httpsend.Busy(providerName, err)
	}
	defer release()
	a, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/sendMail"), contentType: "text/plain", body: payload, final: true})
	if f != nil {
		return "", f
	}
	return "250 2.0.0 Accepted by Microsoft Graph (request-id " + a.requestID + ")", nil
}

// userURL is the URL of a path under the sending mailbox.
func (d *delivery) userURL(path string) string {
	return d.t.baseURL() + "/v1.0/users/" + url.PathEscape(d.t.Account) + path
}

// readAPIError decodes Graph's error answer as far as it can.
func readAPIError(resp *http.Response, reqID string) *apiError {
	e := &apiError{Status: resp.StatusCode, RequestID: reqID, RetryAt: httpsend.RetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}
