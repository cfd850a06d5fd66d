package transport

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestErrorClassification(t *testing.T) {
	reply := func(code int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: "m"}
	}
	tests := []struct {
		name               string
		err                *Error
		temporary, reached bool
	}{
		{"provider 4xx", &Error{Kind: KindProvider, Reply: reply(451)}, true, true},
		{"provider 5xx", &Error{Kind: KindProvider, Reply: reply(550)}, false, true},
		{"limit", &Error{Kind: KindLimit, Reply: reply(451), RetryAt: time.Now()}, true, false},
		{"circuit", &Error{Kind: KindCircuit, Reply: reply(451)}, true, false},
		{"busy pool", &Error{Kind: KindBusy, Reply: reply(451)}, true, false},
		{"storage", &Error{Kind: KindStorage, Reply: reply(452)}, true, false},
		{"local 5xx", &Error{Kind: KindLocal, Reply: reply(501)}, false, false},
		{"ambiguous", &Error{Kind: KindAmbiguous, Reply: reply(451)}, true, true},
		{"token", &Error{Kind: KindToken, Reply: reply(454)}, true, true},
		{"no reply", &Error{Kind: KindLost}, true, true},
	}
	for _, tc := range tests {
		if got := tc.err.Temporary(); got != tc.temporary {
			t.Errorf("%s: Temporary() = %v", tc.name, got)
		}
		if got := tc.err.Attempted(); got != tc.reached {
			t.Errorf("%s: Attempted() = %v", tc.name, got)
		}
	}
}

func TestAsWrapsUnclassifiedErrors(t *testing.T) {
	te := As(io.ErrUnexpectedEOF)
	if te.Kind != KindLocal || te.Reply.Code != 451 || !errors.Is(te, io.ErrUnexpectedEOF) {
		t.Errorf("As(unclassified) = %+v", te)
	}
	orig := &Error{Kind: KindProvider, Reply: &smtp.SMTPError{Code: 550}}
	if As(errors.Join(errors.New("context"), orig)) != orig {
		t.Error("As does not find a wrapped *Error")
	}
}

func TestReplyText(t *testing.T) {
	tests := []struct {
		r    *smtp.SMTPError
		want string
	}{
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, "550 5.1.1 no such user"},
		{&smtp.SMTPError{Code: 452, EnhancedCode: smtp.NoEnhancedCode, Message: "full"}, "452 full"},
		{nil, ""},
	}
	for _, tc := range tests {
		if got := ReplyText(tc.r); got != tc.want {
			t.Errorf("ReplyText = %q, want %q", got, tc.want)
		}
	}
	e := &Error{Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "later"}}
	if e.Error() != "451 4.7.0 later" {
		t.Errorf("Error() = %q", e.Error())
	}
}
