package graph

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/rcptfit"
	"github.com/oauthrelay/oauthrelay/internal/transport"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// chunkBytes is the size of an upload session's PUTs: Graph takes "up to
// 4 MB each time", and ranges in multiples of 320 KiB are what Microsoft
// documents for its upload sessions (OneDrive's "upload large files").
// 10 × 320 KiB is under 4 MB whether Microsoft means 10^6 or 2^20.
const chunkBytes = 10 * 320 << 10

// largeMessage is a message sent as a draft with attachments added.
type largeMessage struct {
	msg   transport.Message
	plan  *plan
	draft []byte // base64 MIME
}

// prepareLarge reads the message twice: its structure, then the draft.
func (d *delivery) prepareLarge(msg transport.Message, fit *rcptfit.Fitted) (*largeMessage, *failure) {
	p, err := planSplit(fit, draftBudget)
	if err != nil {
		return nil, splitFailure(err)
	}
	fit, f := d.Refit(msg)
	if f != nil {
		return nil, f
	}
	raw, err := p.draftBytes(fit)
	if err != nil {
		return nil, splitFailure(err)
	}
	sessions := 0
	for _, a := range p.atts {
		if a.size >= uploadSessionFrom {
			sessions++
		}
	}
	d.log.Info("message over sendMail's limit: sending it as a draft with its large parts attached",
		"size", msg.Size(), "draft_bytes", len(raw), "attachments", len(p.atts), "upload_sessions", sessions)
	return &largeMessage{msg: msg, plan: p, draft: []byte(base64.StdEncoding.EncodeToString(raw))}, nil
}

// splitFailure classifies a failure to split the message.
func splitFailure(err error) *failure {
	var (
		draft errDraftTooLarge
		att   errAttachmentTooLarge
		st    errStructure
	)
	switch {
	case errors.As(err, &draft), errors.As(err, &att):
		return httpsend.Local(&smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: "Message too large for Microsoft Graph: " + err.Error()}, err)
	case errors.As(err, &st):
		return httpsend.Local(errStructureRefused, err)
	}
	return httpsend.Local(httpsend.ReplyLocal, err)
}

// sendLarge sends the draft, attaches the parts that left it, and sends
// it. The sequence holds one of the mailbox's request slots from the
// first request to the last: its requests go one after another, so one
// slot is what it uses of Graph's four, it never waits for a slot half
// way (with a draft in the mailbox), and it has the slot it needs to
// delete the draft when it fails. At most maxLargePerMailbox sequences of
// a mailbox run at once, so that small messages keep slots of their own.
func (d *delivery) sendLarge(ctx context.Context, lm *largeMessage) (string, *failure) {
	releaseLarge, err := largeSlots.Acquire(ctx, d.t.Account)
	if err != nil {
		return "", httpsend.Busy(providerName, err)
	}
	defer releaseLarge()
	release, err := d.t.Acquire(ctx, processSlots)
	if err != nil {
		return "", httpsend.Busy(providerName, err)
	}
	defer release()
	id, f := d.createDraft(ctx, lm.draft)
	if f != nil {
		return "", f
	}
	reply, f := d.completeDraft(ctx, lm, id)
	if f != nil && f.Err.Kind != transport.KindAmbiguous {
		d.deleteDraft(ctx, id)
	}
	if f != nil && f.Err.Kind == transport.KindAmbiguous {
		// The draft stays: if it is still in the mailbox's Drafts, the
		// message was not sent.
		d.log.Warn("the answer to the draft's send was lost; the draft is left in the mailbox: if it is still among its drafts, the message was not sent", "draft_id", id)
	}
	return reply, f
}

// completeDraft attaches the message's large parts to the draft and
// sends it.
func (d *delivery) completeDraft(ctx context.Context, lm *largeMessage, id string) (string, *failure) {
	fit, f := d.Refit(lm.msg)
	if f != nil {
		return "", f
	}
	var failed *failure
	err := lm.plan.eachAttachment(fit, func(a *attachment, content io.Reader) error {
		if a.size >= uploadSessionFrom {
			failed = d.uploadAttachment(ctx, id, a, content)
		} else {
			failed = d.postAttachment(ctx, id, a, content)
		}
		if failed != nil {
			return failed
		}
		return nil
	})
	switch {
	case failed != nil:
		return "", failed
	case err != nil:
		return "", httpsend.Local(httpsend.ReplyLocal, err)
	}
	a, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/messages/" + url.PathEscape(id) + "/send"), final: true})
	if f != nil {
		return "", f
	}
	return fmt.Sprintf("250 2.0.0 Accepted by Microsoft Graph (request-id %s; sent as a draft with %d attachments added)", a.requestID, len(lm.plan.atts)), nil
}

// createDraft creates the draft from MIME (Microsoft Graph, "Send Outlook
// messages in MIME format": POST .../messages, text/plain, base64) and
// returns its id.
func (d *delivery) createDraft(ctx context.Context, payload []byte) (string, *failure) {
	a, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/messages"), contentType: "text/plain", body: payload})
	if f != nil {
		return "", f
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(a.body, &created); err != nil || created.ID == "" {
		return "", unexpectedAnswer("the draft's creation", a)
	}
	return created.ID, nil
}

// deleteDraft deletes a draft that will not be sent; a failure is logged
// only (the message's failure is what the client hears).
func (d *delivery) deleteDraft(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, f := d.do(ctx, call{method: http.MethodDelete, url: d.userURL("/messages/" + url.PathEscape(id))})
	if f != nil {
		d.log.Warn("could not delete the unsent draft; it stays in the mailbox's Drafts folder", "draft_id", id, "error", f.Err.Error())
		return
	}
	d.log.Info("deleted the unsent draft", "draft_id", id)
}

// fileAttachment is Graph's fileAttachment resource and, without
// @odata.type and contentBytes, its attachmentItem.
type fileAttachment struct {
	ODataType      string `json:"@odata.type,omitempty"`
	AttachmentType string `json:"attachmentType,omitempty"`
	Name           string `json:"name"`
	ContentType    string `json:"contentType"`
	Size           int64  `json:"size,omitempty"`
	IsInline       bool   `json:"isInline"`
	ContentID      string `json:"contentId,omitempty"`
	ContentBytes   []byte `json:"contentBytes,omitempty"` // base64 in JSON
}

// postAttachment adds an attachment under 3 MB in one request (POST
// .../messages/{id}/attachments).
func (d *delivery) postAttachment(ctx context.Context, id string, a *attachment, content io.Reader) *failure {
	data, err := io.ReadAll(io.LimitReader(content, uploadSessionFrom))
	if err != nil {
		return httpsend.Local(httpsend.ReplyLocal, err)
	}
	if int64(len(data)) != a.size {
		return httpsend.Local(httpsend.ReplyLocal, errContent(a, fmt.Sprintf("came out as %d bytes", len(data))))
	}
	body, err := json.Marshal(fileAttachment{ODataType: "#microsoft.graph.fileAttachment", Name: a.name,
		ContentType: a.contentType, IsInline: a.inline, ContentID: a.contentID, ContentBytes: data})
	if err != nil {
		return httpsend.Local(httpsend.ReplyLocal, err)
	}
	_, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/messages/" + url.PathEscape(id) + "/attachments"), contentType: "application/json", body: body})
	return f
}

// uploadAttachment adds an attachment of 3 MB or more through an upload
// session (Microsoft Graph, "Attach large files to Outlook messages").
func (d *delivery) uploadAttachment(ctx context.Context, id string, a *attachment, content io.Reader) *failure {
	uploadURL, f := d.createUploadSession(ctx, id, a)
	if f != nil {
		return f
	}
	buf := make([]byte, chunkBytes)
	for start := int64(0); start < a.size; {
		n, err := io.ReadFull(content, buf[:min(int64(len(buf)), a.size-start)])
		if err != nil {
			var se sourceError
			if errors.As(err, &se) {
				return httpsend.Local(httpsend.ReplyLocal, se)
			}
			return httpsend.Local(httpsend.ReplyLocal, errContent(a, fmt.Sprintf("ended after %d bytes", start+int64(n))))
		}
		end := start + int64(n) - 1
		if f := d.putChunk(ctx, uploadURL, buf[:n], start, end, a.size); f != nil {
			return f
		}
		start = end + 1
	}
	if n, _ := io.Copy(io.Discard, content); n != 0 {
		return httpsend.Local(httpsend.ReplyLocal, errContent(a, "is longer than at first"))
	}
	return nil
}

func (d *delivery) createUploadSession(ctx context.Context, id string, a *attachment) (string, *failure) {
	body, err := json.Marshal(map[string]fileAttachment{"AttachmentItem": {AttachmentType: "file", Name: a.name,
		ContentType: a.contentType, Size: a.size, IsInline: a.inline, ContentID: a.contentID}})
	if err != nil {
		return "", httpsend.Local(httpsend.ReplyLocal, err)
	}
	ans, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/messages/" + url.PathEscape(id) + "/attachments/createUploadSession"),
		contentType: "application/json", body: body})
	if f != nil {
		return "", f
	}
	var session struct {
		UploadURL string `json:"uploadUrl"`
	}
	if err := json.Unmarshal(ans.body, &session); err != nil {
		return "", unexpectedAnswer("createUploadSession", ans)
	}
	if u, err := url.Parse(session.UploadURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", unexpectedAnswer("createUploadSession", ans)
	}
	return session.UploadURL, nil
}

// putChunk uploads bytes start-end of the attachment. The upload URL
// carries its own credential: no token goes to it.
func (d *delivery) putChunk(ctx context.Context, uploadURL string, chunk []byte, start, end, total int64) *failure {
	h := http.Header{"Content-Range": {"bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10) + "/" + strconv.FormatInt(total, 10)}}
	ans, f := d.do(ctx, call{method: http.MethodPut, url: uploadURL, contentType: "application/octet-stream", body: chunk, header: h, preauthenticated: true})
	if f != nil {
		return uploadRefused(f)
	}
	if end+1 == total {
		return nil
	}
	var next struct {
		Ranges []string `json:"nextExpectedRanges"`
	}
	if json.Unmarshal(ans.body, &next) != nil || len(next.Ranges) == 0 || !strings.HasPrefix(next.Ranges[0], strconv.FormatInt(end+1, 10)) {
		return unexpectedAnswer("an upload session's PUT", ans)
	}
	return nil
}

// uploadRefused classifies a refusal of the upload URL itself: a 401, 403
// or 404 there says the session expired or was dropped, not that the
// relay's token was refused.
func uploadRefused(f *failure) *failure {
	var ae *apiError
	if !errors.As(f.Err.Err, &ae) {
		return f
	}
	switch ae.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return &failure{Err: &transport.Error{Kind: transport.KindProvider, Err: ae, Reply: errUploadSessionLost}}
	}
	return f
}

// errContent says an attachment's content differs from the first
// reading of the message.
func errContent(a *attachment, what string) error {
	return sourceError{fmt.Errorf("the message differs from its first reading: attachment %s %s", a, what)}
}

// unexpectedAnswer is a 2xx answer the relay cannot use.
func unexpectedAnswer(what string, a *answer) *failure {
	err := fmt.Errorf("unexpected answer to %s: status %d (request-id %s)", what, a.status, a.requestID)
	return &failure{Err: &transport.Error{Kind: transport.KindProvider, Err: err, Reply: errUnexpectedAnswer}}
}
