package httpsend_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// tokens hands out numbered tokens; err fails every call.
type tokens struct {
	issued      int
	invalidated []string
	err         error
}

func (s *tokens) Token(context.Context) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	s.issued++
	return "token-" + string(rune('0'+s.issued)), nil
}

func (s *tokens) Invalidate(tok string) { s.invalidated = append(s.invalidated, tok) }

func refused() *httpsend.Failure {
	return &httpsend.Failure{Err: &transport.Error{Kind: transport.KindAuth}, TokenRefused: true}
}

func TestSendWithToken(t *testing.T) {
	tests := []struct {
		name        string
		answers     []*httpsend.Failure // per call; nil: accepted
		tokenErr    error
		wantCalls   int
		wantKind    transport.Kind // of the failure; -1 for success
		wantDropped []string
	}{
		{name: "accepted", answers: []*httpsend.Failure{nil}, wantCalls: 1, wantKind: -1},
		{name: "refused once, then accepted with a fresh token", answers: []*httpsend.Failure{refused(), nil}, wantCalls: 2, wantKind: -1, wantDropped: []string{"token-1"}},
		{name: "refused twice", answers: []*httpsend.Failure{refused(), refused(), nil}, wantCalls: 2, wantKind: transport.KindAuth, wantDropped: []string{"token-1"}},
		{name: "another failure is not retried", answers: []*httpsend.Failure{httpsend.Local(httpsend.ReplyLocal, nil), nil}, wantCalls: 1, wantKind: transport.KindLocal},
		{name: "no token", tokenErr: errors.New("invalid_grant"), wantCalls: 0, wantKind: transport.KindToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &tokens{err: tt.tokenErr}
			var sent []string
			status, f := httpsend.SendWithToken(context.Background(), src, nil, func(token string) (int, *httpsend.Failure) {
				sent = append(sent, token)
				if a := tt.answers[len(sent)-1]; a != nil {
					return 0, a
				}
				return http.StatusOK, nil
			})
			if len(sent) != tt.wantCalls {
				t.Errorf("%d requests (%v), want %d", len(sent), sent, tt.wantCalls)
			}
			if tt.wantKind == -1 {
				if f != nil || status != http.StatusOK {
					t.Fatalf("status %d, failure %v", status, f)
				}
			} else if f == nil || f.Err.Kind != tt.wantKind {
				t.Fatalf("failure %+v, want kind %d", f, tt.wantKind)
			}
			if len(src.invalidated) != len(tt.wantDropped) || len(tt.wantDropped) > 0 && src.invalidated[0] != tt.wantDropped[0] {
				t.Errorf("invalidated %v, want %v", src.invalidated, tt.wantDropped)
			}
			if len(sent) == 2 && sent[0] == sent[1] {
				t.Errorf("the retry used the refused token again")
			}
		})
	}
}
