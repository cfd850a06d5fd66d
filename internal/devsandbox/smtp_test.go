package devsandbox_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// SetDataDelay holds the reply to each message's final dot, as a real
// provider takes a while to accept a message.
func TestSMTPDataDelay(t *testing.T) {
	sb := testutil.Sandbox(t, devsandbox.Options{})
	const user = "delayed@example.com"
	token := tokenFor(t, sb, user, "https://mail.google.com/")
	c, err := smtp.DialStartTLS(sb.SMTP.Addr, &tls.Config{RootCAs: sb.CA.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: token})); err != nil {
		t.Fatal(err)
	}
	send := func() time.Duration {
		t.Helper()
		start := time.Now()
		if err := c.SendMail(user, []string{"r@example.net"}, strings.NewReader("Subject: delay\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	const delay = 150 * time.Millisecond
	sb.SMTP.SetDataDelay(delay)
	if took := send(); took < delay {
		t.Errorf("with a %s delay the message took %s", delay, took)
	}
	if n := len(sb.SMTP.Messages()); n != 1 {
		t.Errorf("%d messages received, want 1", n)
	}
}
