package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// maxRequestBytes is Graph's request body limit (413 beyond); the message
// travels in base64, so sendMail takes maxMessageBytes of it.
const (
	maxRequestBytes = 4 << 20
	maxMessageBytes = maxRequestBytes / 4 * 3
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// prepare reads the message, fits its header to the envelope and encodes
// it for sendMail.
func (d *delivery) prepare(msg transport.Message) ([]byte, *failure) {
	if msg.Size() > maxMessageBytes {
		return nil, local(errTooLargeYet, nil)
	}
	fit, err := rcptfit.Read(msg, d.rcpts)
	switch {
	case rcptfit.Unreadable(err):
		return nil, local(errHeaderUnreadable, err)
	case err != nil:
		return nil, local(errLocalReply, err)
	}
	if a := fit.Adj; a.Dropped > 0 || a.Blind > 0 || a.Bccs > 0 {
		d.log.Info("header recipients fitted to the envelope", "bcc_added", a.Blind, "outside_envelope_removed", a.Dropped, "client_bcc_fields_removed", a.Bccs)
	}
	if fit.Size > maxMessageBytes {
		return nil, local(errTooLargeYet, nil)
	}
	raw := bytes.NewBuffer(make([]byte, 0, fit.Size))
	raw.Write(fit.Header)
	if _, err := io.Copy(raw, fit.Body); err != nil {
		return nil, local(errLocalReply, err)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(raw.Len()))
	base64.StdEncoding.Encode(out, raw.Bytes())
	return out, nil
}

// send posts the message, holding one of the mailbox's request slots. A
// 401 is answered once with a fresh token (the cached one may have been
// revoked before its expiry).
func (d *delivery) send(ctx context.Context, payload []byte) (reply string, f *failure) {
	release, err := processSlots.acquire(ctx, d.t.Account)
	if err != nil {
		return "", &failure{err: &transport.Error{Kind: transport.KindBusy, Reply: errBusy, Err: err}}
	}
	defer release()
	for attempt := 1; ; attempt++ {
		token, err := d.t.Tokens.Token(ctx)
		if err != nil {
			return "", tokenFailure(err)
		}
		reqID, f := d.post(ctx, token, payload)
		if f == nil {
			return "250 2.0.0 Accepted by Microsoft Graph (request-id " + reqID + ")", nil
		}
		var ae *apiError
		if attempt == 1 && errors.As(f.err.Err, &ae) && ae.Status == http.StatusUnauthorized {
			d.log.Info("Microsoft Graph refused the access token; refreshing it and trying once more", "code", ae.Code, "request_id", ae.RequestID)
			d.t.Tokens.Invalidate(token)
			continue
		}
		return "", f
	}
}

// post makes one sendMail request; it returns Graph's request-id.
func (d *delivery) post(ctx context.Context, token string, payload []byte) (string, *failure) {
	u := d.t.baseURL() + "/v1.0/users/" + url.PathEscape(d.t.Account) + "/sendMail"
	var stage atomic.Int32 // a progress; the trace runs on the transport's goroutines
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { stage.CompareAndSwap(int32(notConnected), int32(connected)) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				stage.Store(int32(written))
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(payload))
	if err != nil {
		return "", local(errLocalReply, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := d.t.client().Do(req)
	if err != nil {
		return "", classifyNetwork(ctx, redact(err), progress(stage.Load()))
	}
	defer resp.Body.Close()
	reqID := resp.Header.Get("request-id")
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return reqID, nil
	}
	return "", classifyAPI(readAPIError(resp, reqID))
}

// readAPIError decodes Graph's error answer as far as it can.
func readAPIError(resp *http.Response, reqID string) *apiError {
	e := &apiError{Status: resp.StatusCode, RequestID: reqID, RetryAt: retryAt(resp.Header.Get("Retry-After"), time.Now())}
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

// redact drops the request URL from a client error: it holds nothing
// secret, but the error reads better without it, and the mailbox is in
// the log's context already.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
