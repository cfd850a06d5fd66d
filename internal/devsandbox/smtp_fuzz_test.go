package devsandbox

import (
	"strings"
	"testing"
)

// FuzzParseBearer checks the sandbox's reading of an XOAUTH2 or OAUTHBEARER
// initial response (RFC 7628 §3.1 for OAUTHBEARER): no panic on any bytes;
// a success always has a user and a token, and the token is the one the
// response carries; and a response built as a client builds it (an escaped
// authzid for OAUTHBEARER, RFC 5801 §4) gives back exactly its user and
// token.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []struct{ user, token, raw string }{
		{"someone@example.com", "ya29.token", "user=someone@example.com\x01auth=Bearer ya29.token\x01\x01"},
		{"a,b=c@example.com", "eyJ0.eyJ1.sig", "n,a=a=2Cb=3Dc@example.com,\x01host=smtp.office365.com\x01port=587\x01auth=Bearer eyJ0.eyJ1.sig\x01\x01"},
		{"=2C=3D@example.com", "t", "n,,\x01auth=Bearer t\x01\x01"},
		{"x", "Bearer y", "user=x\x01auth=Bearer Bearer y"},
		{"user=x", "a=b", "user=\x01auth=Bearer \x01\x01"},
		{"", "", ""},
		{"", "", "\x01\x01\x01"},
		{"", "", "auth=Bearer t"},
		{"", "", "user=u\x01auth=bearer t\x01\x01"},
		{"", "", "n,a=u,"},
		{"", "", "n,a=u=2,\x01auth=Bearer t\x01\x01"},
		{"", "", "y,a=u,\x01user=v\x01auth=Bearer t\x01auth=Bearer s\x01\x01"},
		{"\x00", "\xff", "\x00\xff="},
		{strings.Repeat("u", 256), strings.Repeat("t", 1024), strings.Repeat("\x01=", 512)},
	} {
		f.Add(false, s.user, s.token, []byte(s.raw))
		f.Add(true, s.user, s.token, []byte(s.raw))
	}
	f.Fuzz(func(t *testing.T, oauthbearer bool, user, token string, raw []byte) {
		mech := "XOAUTH2"
		if oauthbearer {
			mech = "OAUTHBEARER"
		}
		checkParsedResponse(t, mech, raw)
		if user == "" || token == "" || strings.Contains(user, "\x01") || strings.Contains(token, "\x01") {
			return // not a user and token a client can send
		}
		resp := clientResponse(mech, user, token)
		gotUser, gotToken, ok := parseBearer(mech, resp)
		if !ok || gotUser != user || gotToken != token {
			t.Fatalf("%s %q: got %q, %q, %v; want %q, %q", mech, resp, gotUser, gotToken, ok, user, token)
		}
	})
}

// checkParsedResponse: whatever the bytes, a success names a user and a
// token that the response really carries after "auth=Bearer ".
func checkParsedResponse(t *testing.T, mech string, raw []byte) {
	t.Helper()
	user, token, ok := parseBearer(mech, raw)
	if !ok {
		return
	}
	if user == "" || token == "" {
		t.Fatalf("%s %q accepted with user %q and token %q", mech, raw, user, token)
	}
	if strings.Contains(token, "\x01") || !strings.Contains(string(raw), "auth=Bearer "+token) {
		t.Fatalf("%s %q: token %q is not the response's", mech, raw, token)
	}
}

// clientResponse builds an initial response as oauthrelay's client sends it.
func clientResponse(mech, user, token string) []byte {
	if mech == "OAUTHBEARER" {
		esc := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user)
		return []byte("n,a=" + esc + ",\x01host=smtp.example.com\x01port=587\x01auth=Bearer " + token + "\x01\x01")
	}
	return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}
