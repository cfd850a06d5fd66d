package server_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestTLSListeners(t *testing.T) {
	for _, mode := range []string{"starttls", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, harnessOptions{listenerTLS: mode})
			tlsCfg := &tls.Config{RootCAs: h.sb.CA.Pool, ServerName: "127.0.0.1"}
			var c *smtp.Client
			var err error
			if mode == "implicit" {
				c, err = smtp.DialTLS(h.addr, tlsCfg)
			} else {
				c, err = smtp.DialStartTLS(h.addr, tlsCfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.TLSConnectionState(); !ok {
				t.Fatal("connection is not TLS")
			}
			if err := c.Auth(saslPlain(appClient, h.password)); err != nil {
				t.Fatal(err)
			}
			if err := c.SendMail(alice, []string{"x@example.net"}, stringsReader("Subject: tls\r\n\r\nbody\r\n")); err != nil {
				t.Fatal(err)
			}
			if n := len(h.sb.SMTP.Messages()); n != 1 {
				t.Errorf("sandbox has %d messages", n)
			}
		})
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
