package httpsend

import (
	"context"

	"github.com/hashicorp/go-hclog"
)

// TokenSource holds an account's access token; implemented by
// *oauth.Source.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Invalidate drops the cached token if it is the given one (the
	// provider refused it), so that the next Token call refreshes.
	Invalidate(accessToken string)
}

// SendWithToken calls send with the account's access token. When the
// provider refused the token (Failure.TokenRefused), it drops it and
// calls send once more with a fresh one: the cached token may have been
// revoked before its expiry (README "Tokens"). A second refusal is
// returned as it is.
func SendWithToken[T any](ctx context.Context, tokens TokenSource, log hclog.Logger, send func(token string) (T, *Failure)) (T, *Failure) {
	for attempt := 1; ; attempt++ {
		token, err := tokens.Token(ctx)
		if err != nil {
			var zero T
			return zero, TokenFailure(err)
		}
		v, f := send(token)
		if f == nil || !f.TokenRefused || attempt > 1 {
			return v, f
		}
		if log != nil {
			log.Info("the provider refused the access token; refreshing it and trying once more", "error", f.Err.Error())
		}
		tokens.Invalidate(token)
	}
}
