package upstream

import (
	"errors"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func TestClientReplyMapping(t *testing.T) {
	reply := func(code int, ec smtp.EnhancedCode) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "provider says"}
	}
	tests := []struct {
		name string
		err  error
		code int
		ec   smtp.EnhancedCode
		kind transport.Kind
	}{
		{"token", &Error{Stage: StageToken, Err: errors.New("x")}, 454, smtp.EnhancedCode{4, 7, 0}, transport.KindToken},
		{"auth", &Error{Stage: StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 8})}, 454, smtp.EnhancedCode{4, 7, 0}, transport.KindAuth},
		{"connect", &Error{Stage: StageConnect, Err: errors.New("refused")}, 451, smtp.EnhancedCode{4, 4, 1}, transport.KindConnect},
		{"rcpt 550", &Error{Stage: StageRcpt, Reply: reply(550, smtp.EnhancedCode{5, 1, 1})}, 550, smtp.EnhancedCode{5, 1, 1}, transport.KindProvider},
		{"data 452 without enhanced code", &Error{Stage: StageData, Reply: reply(452, smtp.NoEnhancedCode)}, 452, smtp.EnhancedCode{4, 0, 0}, transport.KindProvider},
		{"mail 421", &Error{Stage: StageMail, Reply: reply(421, smtp.EnhancedCode{4, 4, 2})}, 451, smtp.EnhancedCode{4, 4, 2}, transport.KindLost},
		{"ambiguous", &Error{Stage: StageData, Ambiguous: true, Err: errors.New("EOF")}, 451, smtp.EnhancedCode{4, 4, 2}, transport.KindAmbiguous},
		{"lost mid-transaction", &Error{Stage: StageRcpt, Err: errors.New("reset")}, 451, smtp.EnhancedCode{4, 4, 2}, transport.KindLost},
		{"not an upstream error", errors.New("boom"), 451, smtp.EnhancedCode{4, 3, 0}, transport.KindLocal},
	}
	for _, tc := range tests {
		te := classify(tc.err).(*transport.Error)
		if te.Kind != tc.kind {
			t.Errorf("%s: kind %d, want %d", tc.name, te.Kind, tc.kind)
		}
		got := te.Reply
		if got.Code != tc.code || got.EnhancedCode != tc.ec {
			t.Errorf("%s: %d %v, want %d %v", tc.name, got.Code, got.EnhancedCode, tc.code, tc.ec)
		}
	}
}
