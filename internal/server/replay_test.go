package server_test

import (
	"testing"

	"github.com/emersion/go-smtp"
)

// TestRecipientRefusedOnReplayIsNotAProviderFailure: when the connection of
// a transaction is lost and the provider, on the new connection, refuses a
// recipient it accepted before, that is the provider's answer about one
// recipient: it must not be retried on more connections nor count against
// the account's circuit (README: a recipient's refusal counts for neither).
func TestRecipientRefusedOnReplayIsNotAProviderFailure(t *testing.T) {
	h := newHarness(t, harnessOptions{providerExtra: `circuit_failure_threshold = 1
  circuit_open_timeout = "10m"`})
	const first, second = "first@example.net", "second@example.net"
	c := dialAuth(t, h, appClient)
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(first, nil); err != nil {
		t.Fatal(err)
	}
	_, _, connsBefore := h.sb.SMTP.Counts()
	h.sb.SMTP.SetRcptReply(first, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	h.sb.SMTP.CloseAllConnections()
	if err := c.Rcpt(second, nil); err == nil {
		t.Fatal("RCPT accepted although an earlier recipient is now refused")
	}
	_, _, connsAfter := h.sb.SMTP.Counts()
	if n := connsAfter - connsBefore; n != 1 {
		t.Errorf("the replay opened %d new upstream connections, want 1 (a refused recipient is no reason to try again)", n)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	h.sb.SMTP.SetRcptReply(first, nil)
	// The account's circuit must still be closed.
	h.mustSend(appClient, alice)
}
