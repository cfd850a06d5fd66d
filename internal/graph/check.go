package graph

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// Check tells whether the account can send through Graph without sending
// anything (`oauthrelay account test`): it posts a message without
// recipients. The error is a *httpsend.Failure with advice when the
// token, the permission or the mailbox is refused.
func (t *Transport) Check(ctx context.Context) (string, error) {
	d := &delivery{t: t, log: t.logger().With("account", t.Account)}
	payload := []byte(base64.StdEncoding.EncodeToString([]byte(httpsend.CheckMessage)))
	_, f := d.do(ctx, call{method: http.MethodPost, url: d.userURL("/sendMail"), contentType: "text/plain", body: payload, final: true})
	if f == nil {
		return "Microsoft Graph took the token and the mailbox (a message without recipients goes nowhere)", nil
	}
	var ae *apiError
	if errors.As(f.Err.Err, &ae) && ae.Status == http.StatusBadRequest {
		return "Microsoft Graph took the token and the mailbox, and refused the test message for naming no recipient, as it should (nothing was sent)", nil
	}
	return "", f
}
