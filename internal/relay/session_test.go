package relay

import (
	"errors"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/upstream"
)

func TestPlaintextAuthRule(t *testing.T) {
	tests := []struct {
		tls, allowInsecure bool
		remote             string
		want               bool
	}{
		{false, false, "127.0.0.1:40000", true},
		{false, false, "[::1]:40000", true},
		{false, false, "192.0.2.10:40000", false},
		{false, true, "192.0.2.10:40000", true},
		{true, false, "192.0.2.10:40000", true},
		{false, false, "garbage", false},
	}
	for _, tc := range tests {
		if got := plaintextAuthAllowed(tc.tls, tc.allowInsecure, tc.remote); got != tc.want {
			t.Errorf("plaintextAuthAllowed(tls=%v, insecure=%v, %s) = %v, want %v", tc.tls, tc.allowInsecure, tc.remote, got, tc.want)
		}
	}
}

func TestUpstreamReplyMapping(t *testing.T) {
	reply := func(code int, ec smtp.EnhancedCode) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "provider says"}
	}
	tests := []struct {
		name string
		err  error
		code int
		ec   smtp.EnhancedCode
	}{
		{"token", &upstream.Error{Stage: upstream.StageToken, Err: errors.New("x")}, 454, smtp.EnhancedCode{4, 7, 0}},
		{"auth", &upstream.Error{Stage: upstream.StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 8})}, 454, smtp.EnhancedCode{4, 7, 0}},
		{"connect", &upstream.Error{Stage: upstream.StageConnect, Err: errors.New("refused")}, 451, smtp.EnhancedCode{4, 4, 1}},
		{"rcpt 550", &upstream.Error{Stage: upstream.StageRcpt, Reply: reply(550, smtp.EnhancedCode{5, 1, 1})}, 550, smtp.EnhancedCode{5, 1, 1}},
		{"data 452 without enhanced code", &upstream.Error{Stage: upstream.StageData, Reply: reply(452, smtp.NoEnhancedCode)}, 452, smtp.EnhancedCode{4, 0, 0}},
		{"mail 421", &upstream.Error{Stage: upstream.StageMail, Reply: reply(421, smtp.EnhancedCode{4, 4, 2})}, 451, smtp.EnhancedCode{4, 4, 2}},
		{"ambiguous", &upstream.Error{Stage: upstream.StageData, Ambiguous: true, Err: errors.New("EOF")}, 451, smtp.EnhancedCode{4, 4, 2}},
		{"lost mid-transaction", &upstream.Error{Stage: upstream.StageRcpt, Err: errors.New("reset")}, 451, smtp.EnhancedCode{4, 4, 2}},
		{"not an upstream error", errors.New("boom"), 451, smtp.EnhancedCode{4, 3, 0}},
	}
	for _, tc := range tests {
		got := upstreamReply(tc.err)
		if got.Code != tc.code || got.EnhancedCode != tc.ec {
			t.Errorf("%s: %d %v, want %d %v", tc.name, got.Code, got.EnhancedCode, tc.code, tc.ec)
		}
	}
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	l := &loginServer{authenticate: func(u, p string) error { gotUser, gotPass = u, p; return nil }}
	if ch, done, err := l.Next(nil); string(ch) != "Username:" || done || err != nil {
		t.Fatalf("step 1: %q %v %v", ch, done, err)
	}
	if ch, done, err := l.Next([]byte("app")); string(ch) != "Password:" || done || err != nil {
		t.Fatalf("step 2: %q %v %v", ch, done, err)
	}
	if _, done, err := l.Next([]byte("pw")); !done || err != nil || gotUser != "app" || gotPass != "pw" {
		t.Fatalf("step 3: %v %v %q %q", done, err, gotUser, gotPass)
	}
}

func TestAuthCache(t *testing.T) {
	c := newAuthCache()
	now := time.Now()
	c.remember("app", "right", "$hash1", now)
	tests := []struct {
		name, user, pw, hash string
		at                   time.Time
		want                 bool
	}{
		{"same password", "app", "right", "$hash1", now, true},
		{"wrong password", "app", "wrong", "$hash1", now, false},
		{"other user", "other", "right", "$hash1", now, false},
		{"hash changed in the config", "app", "right", "$hash2", now, false},
		{"expired", "app", "right", "$hash1", now.Add(authCacheTTL + time.Second), false},
	}
	for _, tc := range tests {
		if got := c.check(tc.user, tc.pw, tc.hash, tc.at); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	var none *authCache
	if none.check("app", "right", "$hash1", now) {
		t.Error("nil cache matched")
	}
}
