package relay

import (
	"net/textproto"
	"strings"
	"testing"
)

// step is one line of a scripted conversation: what the client sends
// ("" sends nothing: read the greeting) and the exact reply line it must
// get.
type step struct{ send, reply string }

// converse plays a script over a raw connection and compares every reply
// line exactly (multi-line replies: the last line).
func (e *contractEnv) converse(c *textproto.Conn, script []step) {
	e.t.Helper()
	for _, s := range script {
		if s.send != "" {
			if err := c.PrintfLine("%s", s.send); err != nil {
				e.t.Fatal(err)
			}
		}
		var line string
		for {
			l, err := c.ReadLine()
			if err != nil {
				e.t.Fatalf("after %q: %v", s.send, err)
			}
			line = l
			if len(l) < 4 || l[3] != '-' {
				break
			}
		}
		if line != s.reply && !(strings.HasSuffix(s.reply, "*") && strings.HasPrefix(line, strings.TrimSuffix(s.reply, "*"))) {
			e.t.Fatalf("after %q: reply %q, want %q", s.send, line, s.reply)
		}
	}
}

var (
	userB64 = b64("app")
	passB64 = b64("secret-pw")
)

// AUTH as printers, scanners and old mail programs do it, line by line
// (RFC 4954; LOGIN: draft-murchison-sasl-login).
func TestDeviceAuthConversations(t *testing.T) {
	mail := []step{{"MAIL FROM:<app@example.com>", "250 2.0.0 Roger, accepting mail from <app@example.com>"}}
	tests := []struct {
		name   string
		script []step
	}{
		{"LOGIN with both prompts", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"}, // "Username:"
			{userB64, "334 UGFzc3dvcmQ6"},      // "Password:"
			{passB64, "235 2.0.0 Authentication succeeded"},
		}},
		{"LOGIN with the username as initial response", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH LOGIN " + userB64, "334 UGFzc3dvcmQ6"},
			{passB64, "235 2.0.0 Authentication succeeded"},
		}},
		{"PLAIN with an initial response", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH PLAIN " + plainResponse("app", "secret-pw"), "235 2.0.0 Authentication succeeded"},
		}},
		{"PLAIN without an initial response: empty challenge", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH PLAIN", "334 "},
			{plainResponse("app", "secret-pw"), "235 2.0.0 Authentication succeeded"},
		}},
		{"PLAIN with the username as authorization identity", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH PLAIN " + b64("app\x00app\x00secret-pw"), "235 2.0.0 Authentication succeeded"},
		}},
		{"lower-case commands", []step{
			{"ehlo mfp.lan", "250 SIZE"},
			{"auth login", "334 VXNlcm5hbWU6"},
			{userB64, "334 UGFzc3dvcmQ6"},
			{passB64, "235 2.0.0 Authentication succeeded"},
		}},
		{"HELO, then AUTH LOGIN", []step{
			{"HELO scanner", "250 2.0.0 Hello scanner"}, // one line: no extensions
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{userB64, "334 UGFzc3dvcmQ6"},
			{passB64, "235 2.0.0 Authentication succeeded"},
		}},
		{"HELO, then AUTH PLAIN", []step{
			{"HELO scanner", "250 2.0.0 Hello scanner"},
			{"AUTH PLAIN " + plainResponse("app", "secret-pw"), "235 2.0.0 Authentication succeeded"},
		}},
		{"cancelled at the username prompt, then again", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{"*", "501 5.0.0 Negotiation cancelled"},
			{"MAIL FROM:<app@example.com>", "530 5.7.0 Authentication required"},
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{userB64, "334 UGFzc3dvcmQ6"},
			{passB64, "235 2.0.0 Authentication succeeded"},
		}},
		{"cancelled at the password prompt", []step{
			{"EHLO mfp.lan", "250 SIZE"},
			{"AUTH LOGIN " + userB64, "334 UGFzc3dvcmQ6"},
			{"*", "501 5.0.0 Negotiation cancelled"},
			{"AUTH PLAIN", "334 "},
			{"*", "501 5.0.0 Negotiation cancelled"},
			{"AUTH PLAIN " + plainResponse("app", "secret-pw"), "235 2.0.0 Authentication succeeded"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newContractEnv(t, false, false)
			c := e.dialFrom("127.0.0.1")
			e.converse(c, append(tc.script, mail...))
		})
	}
}

// The replies to AUTH that goes wrong.
func TestDeviceAuthFailures(t *testing.T) {
	tests := []struct {
		name   string
		script []step
	}{
		{"wrong password", []step{
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{userB64, "334 UGFzc3dvcmQ6"},
			{b64("wrong"), "535 5.7.8 Authentication credentials invalid"},
		}},
		{"PLAIN for another authorization identity", []step{
			{"AUTH PLAIN " + b64("boss\x00app\x00secret-pw"), "535 5.7.8 Authentication credentials invalid"},
		}},
		{"PLAIN without its NUL separators", []step{
			{"AUTH PLAIN " + b64("app secret-pw"), "501 5.5.2 Malformed AUTH PLAIN response: authzid NUL authcid NUL password (RFC 4616)"},
		}},
		{"response that is not base64 (go-smtp's reply; RFC 4954 asks for 501)", []step{
			{"AUTH LOGIN", "334 VXNlcm5hbWU6"},
			{"app", "454 4.7.0 Invalid base64 data"},
		}},
		{"unknown mechanism", []step{
			{"AUTH CRAM-MD5", "504 5.5.4 Unsupported authentication mechanism"},
		}},
		{"a second AUTH", []step{
			{"AUTH PLAIN " + plainResponse("app", "secret-pw"), "235 2.0.0 Authentication succeeded"},
			{"AUTH PLAIN " + plainResponse("app", "secret-pw"), "503 5.5.1 Already authenticated"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newContractEnv(t, false, false)
			c := e.dialFrom("127.0.0.1")
			e.converse(c, append([]step{{"EHLO mfp.lan", "250 SIZE"}}, tc.script...))
		})
	}
}

// MAIL FROM with an AUTH= parameter (RFC 4954 §5), as some devices send
// it, is accepted and the parameter ignored: the client's own identity
// decides.
func TestMailAuthParameterIgnored(t *testing.T) {
	for _, param := range []string{"AUTH=<>", "AUTH=app@example.com", "auth=<>"} {
		t.Run(param, func(t *testing.T) {
			e := newContractEnv(t, false, false)
			c := e.session()
			e.expect(c, "MAIL FROM:<app@example.com> "+param, 250)
			e.expect(c, "RCPT TO:<r@x.test>", 250)
			e.data(c, "Subject: x\r\n\r\ny\r\n", 250)
			if env := e.ft.envs[0]; env.From != "app@example.com" || env.Client != "app" {
				t.Errorf("envelope %+v", env)
			}
		})
	}
}
