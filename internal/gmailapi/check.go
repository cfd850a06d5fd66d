package gmailapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
)

// Check tells whether the account can send through the Gmail API without
// sending anything (`oauthrelay account test`): it posts a message without
// recipients. The error is a *httpsend.Failure with advice when the token,
// its scopes or the mailbox are refused.
func (t *Transport) Check(ctx context.Context) (string, error) {
	token, err := t.Tokens.Token(ctx)
	if err != nil {
		return "", httpsend.TokenFailure(err)
	}
	u := t.baseURL() + "/upload/gmail/v1/users/" + url.PathEscape(t.Account) + "/messages/send?uploadType=media"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(httpsend.CheckMessage))
	if err != nil {
		return "", httpsend.Local(httpsend.ReplyLocal, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "message/rfc822")
	resp, f := httpsend.Do(t.client(), req, providerName)
	if f != nil {
		return "", f
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return "the Gmail API took the account's token and mailbox (a message without recipients goes nowhere)", nil
	case resp.StatusCode == http.StatusBadRequest:
		e := readAPIError(resp, time.Now())
		if e.Reason != reasonFailedPrecondition {
			return "the Gmail API took the account's token and mailbox, and refused the test message for naming no recipient, as it should (nothing was sent)", nil
		}
		return "", classifyAPI(e)
	}
	return "", classifyAPI(readAPIError(resp, time.Now()))
}
