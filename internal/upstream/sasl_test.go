package upstream

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestBearerInitialResponses(t *testing.T) {
	tests := []struct {
		mech, user, host string
		port             int
		want             string
	}{
		// Google's XOAUTH2 protocol: user=<address>^Aauth=Bearer <token>^A^A.
		{"XOAUTH2", "someone@example.com", "smtp.gmail.com", 587, "user=someone@example.com\x01auth=Bearer ya29.token\x01\x01"},
		// RFC 7628 §3.1 with an escaped authzid (RFC 5801 §4).
		{"OAUTHBEARER", "a,b=c@example.com", "smtp.office365.com", 587, "n,a=a=2Cb=3Dc@example.com,\x01host=smtp.office365.com\x01port=587\x01auth=Bearer ya29.token\x01\x01"},
	}
	for _, tc := range tests {
		c := newBearerClient(tc.mech, tc.user, "ya29.token", tc.host, tc.port)
		mech, ir, err := c.Start()
		if err != nil || mech != tc.mech || string(ir) != tc.want {
			t.Errorf("%s: Start = %q %q %v, want %q", tc.mech, mech, ir, err, tc.want)
		}
	}
}

func TestBearerChallengeIsDecodedAndAcknowledged(t *testing.T) {
	challenge := []byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)
	for mech, wantResp := range map[string]string{"XOAUTH2": "", "OAUTHBEARER": "\x01"} {
		c := newBearerClient(mech, "u@example.com", "t", "h", 1)
		resp, err := c.Next(challenge)
		if err != nil || string(resp) != wantResp || resp == nil {
			t.Errorf("%s: Next = %q, %v; want %q", mech, resp, err, wantResp)
		}
		if c.challenge == nil || c.challenge.Status != "400" || c.challenge.Scope != "https://mail.google.com/" {
			t.Errorf("%s: challenge = %+v", mech, c.challenge)
		}
	}
}

func TestDiagnose(t *testing.T) {
	reply := func(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
	}
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"microsoft smtp auth disabled", &Error{Stage: StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 139}, "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")}, "Set-CASMailbox"},
		{"microsoft token refused", &Error{Stage: StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 3}, "Authentication unsuccessful")}, "SMTP.Send"},
		{"gmail bad credentials", &Error{Stage: StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 8}, "Username and Password not accepted."), Challenge: &Challenge{Status: "400", Scope: "https://mail.google.com/"}}, "gmail.send does not work"},
		{"expired token", &Error{Stage: StageAuth, Reply: reply(535, smtp.EnhancedCode{5, 7, 8}, "x"), Challenge: &Challenge{Status: "401"}}, "invalid or expired"},
		{"not auth", &Error{Stage: StageData, Reply: reply(550, smtp.EnhancedCode{5, 7, 1}, "spam")}, ""},
	}
	for _, tc := range tests {
		got := Diagnose(tc.err)
		if tc.want == "" && got != "" || tc.want != "" && !contains(got, tc.want) {
			t.Errorf("%s: Diagnose = %q, want it to mention %q", tc.name, got, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
