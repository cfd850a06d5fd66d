package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// sendFrom submits a message without AUTH from a loopback source address
// (all of 127.0.0.0/8 is local on Linux), as a device in a client network
// does, and returns the final reply text or the first refusal.
func (h *harness) sendFrom(src, from, body string) (string, error) {
	h.t.Helper()
	if body == "" {
		body = "Subject: scan\r\n\r\nscanned page\r\n"
	}
	return testutil.Send(h.addr, testutil.Mail{Source: src, Helo: "device.lan", From: from, To: []string{"rcpt@example.net"}, Body: body})
}

func scannerClient(networks string) string {
	return fmt.Sprintf("client \"scanner\" {\n    networks        = %s\n    allowed_senders = [%q]\n  }\n", networks, alice)
}

// A device in a client's network sends without AUTH through the whole
// relay to the provider; a device outside gets 530. A reload that changes
// the networks applies to the next connection; a reload with an invalid
// network (here: one that would let everyone in) changes nothing.
func TestNetworkClientsAndReload(t *testing.T) {
	h := newHarness(t, harnessOptions{delegatedExtra: scannerClient(`["127.0.0.2/32"]`)})
	if _, err := h.sendFrom("127.0.0.2", alice, ""); err != nil {
		t.Fatalf("device in the network: %v", err)
	}
	msgs := h.sb.SMTP.Messages()
	if len(msgs) != 1 || msgs[0].User != alice || msgs[0].From != alice {
		t.Fatalf("sandbox got %+v", msgs)
	}
	_, err := h.sendFrom("127.0.0.2", bob, "")
	wantCode(t, err, "550 5.7.1") // still bound by its allowed_senders
	_, err = h.sendFrom("127.0.0.3", alice, "")
	wantCode(t, err, "530 5.7.0")

	h.rewrite(strings.Replace(h.cfgText, `["127.0.0.2/32"]`, `["127.0.0.3/32"]`, 1))
	if err := h.rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sendFrom("127.0.0.3", alice, ""); err != nil {
		t.Fatalf("device in the network added by the reload: %v", err)
	}
	_, err = h.sendFrom("127.0.0.2", alice, "")
	wantCode(t, err, "530 5.7.0")

	h.rewrite(strings.Replace(h.cfgText, `["127.0.0.2/32"]`, `["0.0.0.0/0"]`, 1))
	if err := h.rt.Reload(context.Background()); err == nil {
		t.Fatal("a reload with networks holding every IPv4 address succeeded")
	}
	if !strings.Contains(h.logs.String(), "Networks allow everyone") {
		t.Error("the refused reload did not log its diagnostic")
	}
	if _, err := h.sendFrom("127.0.0.3", alice, ""); err != nil {
		t.Fatalf("after the failed reload: %v", err)
	}
	_, err = h.sendFrom("127.0.0.4", alice, "")
	wantCode(t, err, "530 5.7.0")
	if n := len(h.sb.SMTP.Messages()); n != 3 {
		t.Errorf("sandbox got %d messages, want 3", n)
	}
}

// withoutReceived returns a message without its first header field (the
// relay's Received, whose ID and date vary).
func withoutReceived(t *testing.T, data []byte) string {
	t.Helper()
	s := string(data)
	if !strings.HasPrefix(s, "Received: ") {
		t.Fatalf("message does not start with the relay's Received header: %q", s)
	}
	for {
		i := strings.Index(s, "\r\n")
		if i < 0 {
			t.Fatalf("unterminated header: %q", data)
		}
		s = s[i+2:]
		if s == "" || (s[0] != ' ' && s[0] != '\t') {
			return s
		}
	}
}

// A send_as client's messages reach the provider from the account, with
// the header rewritten as the README describes — checked byte for byte at
// the sandbox provider.
func TestSendAsAtTheProvider(t *testing.T) {
	h := newHarness(t, harnessOptions{delegatedExtra: fmt.Sprintf(
		"client \"scanner\" {\n    networks = [\"127.0.0.2/32\"]\n    send_as  = %q\n  }\n", alice)})
	tests := []struct {
		name, in, want string
	}{
		{
			name: "folded encoded-word display name",
			in:   "From: =?ISO-8859-1?Q?Scanner_B=FCro?=\r\n <scanner@dev.lan>\r\nSubject: Scan\r\nMIME-Version: 1.0\r\n\r\npage 1\r\n",
			want: "From: =?ISO-8859-1?Q?Scanner_B=FCro?=\r\n <alice@example.com>\r\nReply-To: =?ISO-8859-1?Q?Scanner_B=FCro?=\r\n <scanner@dev.lan>\r\nSubject: Scan\r\nMIME-Version: 1.0\r\n\r\npage 1\r\n",
		},
		{
			name: "several authors and a Sender",
			in:   "From: Ann <ann@dev.lan>, Ben <ben@dev.lan>\r\nSender: copier@dev.lan\r\nSubject: Minutes\r\n\r\ntext\r\n",
			want: "From: alice@example.com\r\nReply-To: Ann <ann@dev.lan>, Ben <ben@dev.lan>\r\nSubject: Minutes\r\n\r\ntext\r\n",
		},
		{
			name: "no From",
			in:   "Subject: Fax\r\nTo: office@example.net\r\n\r\nfax\r\n",
			want: "Subject: Fax\r\nTo: office@example.net\r\nFrom: alice@example.com\r\n\r\nfax\r\n",
		},
		{
			name: "Reply-To already there",
			in:   "Reply-To: helpdesk@example.com\r\nFrom: MFP <mfp@dev.lan>\r\n\r\n.leading dot\r\n",
			want: "Reply-To: helpdesk@example.com\r\nFrom: MFP <alice@example.com>\r\n\r\n.leading dot\r\n",
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.sendFrom("127.0.0.2", "scanner@dev.lan", tc.in); err != nil {
				t.Fatal(err)
			}
			msgs := h.sb.SMTP.Messages()
			if len(msgs) != i+1 {
				t.Fatalf("sandbox has %d messages, want %d", len(msgs), i+1)
			}
			m := msgs[i]
			if m.From != alice || m.User != alice {
				t.Errorf("envelope sender %q as %q, want %s", m.From, m.User, alice)
			}
			if got := withoutReceived(t, m.Data); got != tc.want {
				t.Errorf("at the provider:\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	logs := h.logs.String()
	for _, want := range []string{"message rewritten to be sent as the client's send_as account", "mail_from=<scanner@dev.lan>", `header_from="ann@dev.lan, ben@dev.lan"`, "send_as=alice@example.com"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

// An old device's whole conversation over a raw socket, through the
// running relay to the provider: HELO (no extensions), AUTH LOGIN with
// its two prompts, MAIL with an AUTH=<> parameter.
func TestOldDeviceConversation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := textproto.NewConn(nc)
	defer c.Close()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, s := range []struct {
		send string
		code int
		text string
	}{
		{"", 220, ""},
		{"HELO copier", 250, "2.0.0 Hello copier"},
		{"AUTH LOGIN", 334, "VXNlcm5hbWU6"},
		{b64(appClient), 334, "UGFzc3dvcmQ6"},
		{b64(h.password), 235, "2.0.0 Authentication succeeded"},
		{"MAIL FROM:<" + alice + "> AUTH=<>", 250, ""},
		{"RCPT TO:<rcpt@example.net>", 250, ""},
		{"DATA", 354, ""},
		{"Subject: copier\r\n\r\nscanned\r\n.", 250, ""},
		{"QUIT", 221, ""},
	} {
		if s.send != "" {
			if err := c.PrintfLine("%s", s.send); err != nil {
				t.Fatal(err)
			}
		}
		code, text, err := c.ReadResponse(s.code)
		if err != nil || (s.text != "" && text != s.text) {
			t.Fatalf("%q: %d %q %v, want %d %q", s.send, code, text, err, s.code, s.text)
		}
	}
	if msgs := h.sb.SMTP.Messages(); len(msgs) != 1 || msgs[0].From != alice || msgs[0].Subject != "copier" {
		t.Fatalf("sandbox got %+v", msgs)
	}
}
