package graph

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// checkMessage names no recipient: Graph checks the token, the app's
// permission and the mailbox before the message, then refuses it
// (ErrorInvalidRecipients), so a check sends nothing.
const checkMessage = "Subject: oauthrelay account test (not sent: no recipients)\r\n\r\nThis message names no recipient and cannot be sent.\r\n"

// Check tells whether the account can send through Graph without sending
// anything (`oauthrelay account test`): it posts a message without
// recipients. The error carries the operator's advice (Advice) when the
// token, the permission or the mailbox is refused.
func (t *Transport) Check(ctx context.Context) (string, error) {
	d := &delivery{t: t, log: t.logger().With("account", t.Account)}
	payload := []byte(base64.StdEncoding.EncodeToString([]byte(checkMessage)))
	_, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/sendMail"), contentType: "text/plain", body: payload, final: true})
	if f == nil {
		return "Microsoft Graph took the token and the mailbox (a message without recipients goes nowhere)", nil
	}
	var ae *apiError
	if errors.As(f.Err.Err, &ae) && ae.Status == http.StatusBadRequest {
		return "Microsoft Graph took the token and the mailbox, and refused the test message for naming no recipient, as it should (nothing was sent)", nil
	}
	return "", &CheckError{Err: f.Err, Advice: f.Advice}
}

// CheckError is a failed Check: the classified error and what to do.
type CheckError struct {
	Err    *transport.Error
	Advice string
}

func (e *CheckError) Error() string { return e.Err.Error() }
func (e *CheckError) Unwrap() error { return e.Err }
