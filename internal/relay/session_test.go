package relay

import (
	"testing"
	"time"
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
