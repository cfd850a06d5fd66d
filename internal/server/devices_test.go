package server_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// sendFrom submits a message without AUTH from a loopback source address
// (all of 127.0.0.0/8 is local on Linux), as a device in a client network
// does, and returns the final reply text or the first refusal.
func (h *harness) sendFrom(src, from, body string) (string, error) {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatalf("dial from %s: %v", src, err)
	}
	c := smtp.NewClient(nc)
	defer c.Close()
	if err := c.Hello("device.lan"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt("rcpt@example.net", nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if body == "" {
		body = "Subject: scan\r\n\r\nscanned page\r\n"
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_ = c.Quit()
	return resp.StatusText, nil
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

	h.rewrite(strings.Replace(h.cfgText, `["127.0.0.2/32"]`, `["0.0.0.0/1", "128.0.0.0/1"]`, 1))
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
