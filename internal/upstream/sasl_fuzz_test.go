package upstream

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const fuzzToken = "ya29.fuzz-access-token"

// FuzzBearerChallenge feeds any 334 challenge (already base64-decoded by
// go-smtp) to the XOAUTH2 and OAUTHBEARER clients. Properties: no panic; the
// answer is the one the specifications require (empty for XOAUTH2, a single
// 0x01 for OAUTHBEARER, RFC 7628 §3.2.3) and never carries the token; the
// challenge is kept verbatim in Raw; its fields, which the provider wrote
// and which end up in log lines and in `account test` output, are single
// printable lines, equal to the JSON's values when those already are.
func FuzzBearerChallenge(f *testing.F) {
	for _, c := range []string{
		`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`,
		`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`,
		`{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}`,
		``, `{}`, `null`, `[]`, `"400"`, `{"status":400}`, `{"status":null,"scope":["a"]}`, `{"status":"400"`,
		`{"status":"400","status":"401"}`, `{"STATUS":"400"}`, `{"scope":"\u00e9\u2028x"}`,
		"{\"status\":\"400\\r\\nlevel=ERROR msg=forged\",\"scope\":\"a\\u001b[31mred\"}",
		"{\"scope\":\"a\\u0000b\\tc  d\"}", "\x00\x01\xff", "not json at all\r\n",
		`{"scope":"` + strings.Repeat("s", 1024) + `"}`, strings.Repeat("[", 1024),
	} {
		f.Add(false, []byte(c))
		f.Add(true, []byte(c))
	}
	f.Fuzz(func(t *testing.T, oauthbearer bool, challenge []byte) {
		mech := "XOAUTH2"
		if oauthbearer {
			mech = "OAUTHBEARER"
		}
		c := newBearerClient(mech, "someone@example.com", fuzzToken, "smtp.example.com", 587)
		if _, _, err := c.Start(); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Next(challenge)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if want := map[bool]string{false: "", true: "\x01"}[oauthbearer]; string(resp) != want {
			t.Fatalf("%s answered %q, want %q", mech, resp, want)
		}
		testutil.AssertNoSecrets(t, "the answer to a challenge", string(resp), []string{fuzzToken})
		ch := c.challenge
		if ch == nil || ch.Raw != string(challenge) {
			t.Fatalf("challenge not kept verbatim: %+v", ch)
		}
		checkChallengeFields(t, challenge, ch)
		checkAuthErrorText(t, ch)
	})
}

// checkChallengeFields: every field is one printable line, and a printable
// JSON string value comes through unchanged.
func checkChallengeFields(t *testing.T, raw []byte, ch *Challenge) {
	t.Helper()
	var decoded map[string]any
	_ = json.Unmarshal(raw, &decoded)
	for name, got := range map[string]string{"status": ch.Status, "schemes": ch.Schemes, "scope": ch.Scope} {
		if !isPrintableLine(got) {
			t.Fatalf("%s = %q is not a printable line", name, got)
		}
		if v, ok := jsonField(decoded, name); ok && isPrintableLine(v) && got != v {
			t.Fatalf("%s = %q, the challenge says %q", name, got, v)
		}
	}
}

// jsonField finds a string field the way encoding/json matches names
// (case-insensitively; the last of several matches wins).
func jsonField(decoded map[string]any, name string) (string, bool) {
	var value string
	found := false
	for k, v := range decoded {
		s, isString := v.(string)
		if strings.EqualFold(k, name) {
			if !isString {
				return "", false
			}
			if found && s != value {
				return "", false // duplicate keys: order unknown after the map
			}
			value, found = s, true
		}
	}
	return value, found
}

func isPrintableLine(s string) bool {
	if !utf8.ValidString(s) || strings.TrimSpace(s) != s || strings.Contains(s, "  ") {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return false
		}
	}
	return true
}

// checkAuthErrorText: the error and the advice built from a challenge are
// single lines, as the log and `account test` print them.
func checkAuthErrorText(t *testing.T, ch *Challenge) {
	t.Helper()
	e := &Error{Stage: StageAuth, Reply: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}, Challenge: ch}
	for _, text := range []string{e.Error(), Diagnose(e)} {
		if !isPrintableLine(text) {
			t.Fatalf("auth failure text is not a printable line: %q", text)
		}
	}
}
