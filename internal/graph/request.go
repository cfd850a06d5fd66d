package graph

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/oauthrelay/oauthrelay/internal/transport"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// maxAnswerBody bounds how much of any Graph answer is read.
const maxAnswerBody = 64 << 10

// call is one Graph request. Its body is held whole so that it can be
// sent again after a 401.
type call struct {
	method, url, contentType string
	body                     []byte
	// extra header fields (Content-Range).
	header http.Header
	// preauthenticated: an upload URL, which carries its own credential;
	// the access token must not be sent to it (Microsoft Graph, "Attach
	// large files to Outlook messages": no Authorization header on PUT).
	preauthenticated bool
	// final is the request that makes Graph send: only its lost answer
	// leaves the message possibly delivered.
	final bool
}

// answer is a successful (2xx) answer.
type answer struct {
	status    int
	header    http.Header
	body      []byte // at most maxAnswerBody bytes
	requestID string
}

// do makes one Graph request. A 401 is answered once with a fresh token
// (the cached one may have been revoked before its expiry). A failure of
// any request but the final one leaves the message unsent.
func (d *delivery) do(ctx context.Context, c call) (*answer, *failure) {
	for attempt := 1; ; attempt++ {
		token := ""
		if !c.preauthenticated {
			var err error
			if token, err = d.t.Tokens.Token(ctx); err != nil {
				return nil, httpsend.TokenFailure(err)
			}
		}
		a, f := d.roundTrip(ctx, c, token)
		if f == nil {
			return a, nil
		}
		var ae *apiError
		if attempt == 1 && !c.preauthenticated && errors.As(f.Err.Err, &ae) && ae.Status == http.StatusUnauthorized {
			d.log.Info("Microsoft Graph refused the access token; refreshing it and trying once more", "code", ae.Code, "request_id", ae.RequestID)
			d.t.Tokens.Invalidate(token)
			continue
		}
		if !c.final {
			f = draftRefused(notSent(f))
		}
		return nil, f
	}
}

// roundTrip sends the request once and classifies what came back.
func (d *delivery) roundTrip(ctx context.Context, c call, token string) (*answer, *failure) {
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, bytes.NewReader(c.body))
	if err != nil {
		return nil, httpsend.Local(httpsend.ReplyLocal, httpsend.Redact(err))
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if len(c.body) == 0 {
		req.Header.Set("Content-Length", strconv.Itoa(0))
	}
	resp, f := httpsend.Do(d.t.client(), req, providerName)
	if f != nil {
		return nil, f
	}
	defer resp.Body.Close()
	reqID := resp.Header.Get("request-id")
	if resp.StatusCode/100 != 2 {
		return nil, classifyAPI(readAPIError(resp, reqID))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBody))
	if err != nil {
		// The answer was cut: Graph did what was asked, but a final
		// request's outcome is then only "probably".
		return nil, httpsend.ClassifyNetwork(ctx, httpsend.Redact(err), httpsend.Written, providerName)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBody))
	return &answer{status: resp.StatusCode, header: resp.Header, body: body, requestID: reqID}, nil
}

// notSent reclassifies the failure of a request that cannot have sent the
// message (anything before the draft's send): a lost answer or a gateway
// timeout there leaves nothing delivered.
func notSent(f *failure) *failure {
	if f.Err.Kind != transport.KindAmbiguous {
		return f
	}
	te := *f.Err
	te.Kind, te.Reply = transport.KindLost, errLost
	nf := *f
	nf.Err = &te
	return &nf
}

// draftRefused reclassifies a 403 to a draft's request (creating it, its
// attachments and upload sessions, deleting it): those need the
// Mail.ReadWrite permission, which sendMail does not, so the refusal is
// about this message over sendMail's limit only — permanent while the
// permission is missing, and no sign that the account cannot send (its
// small messages still go): it counts for no circuit.
func draftRefused(f *failure) *failure {
	var ae *apiError
	if !errors.As(f.Err.Err, &ae) || ae.Status != http.StatusForbidden {
		return f
	}
	return &failure{
		Err: &transport.Error{Kind: transport.KindProvider, Err: ae, Reply: errDraftRefused},
		Advice: "messages over 3 MiB go out as a draft with attachments, which needs the Mail.ReadWrite permission besides Mail.Send " +
			"(application permission with admin consent; delegated: add https://graph.microsoft.com/Mail.ReadWrite to the provider's scopes and consent again)",
	}
}
