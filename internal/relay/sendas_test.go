package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// source yields a header, then n body bytes generated on the fly, and
// counts what it delivered.
type source struct {
	header    []byte
	n         int64
	delivered int64
	body      [4096]byte
}

func (s *source) Read(p []byte) (int, error) {
	if len(s.header) > 0 {
		c := copy(p, s.header)
		s.header = s.header[c:]
		s.delivered += int64(c)
		return c, nil
	}
	if s.n == 0 {
		return 0, io.EOF
	}
	c := copy(p, s.body[:min(int64(len(p)), s.n, int64(len(s.body)))])
	s.n -= int64(c)
	s.delivered += int64(c)
	return c, nil
}

// countingSink hashes what it is given and records how far the source ran
// ahead of it.
type countingSink struct {
	src             *source
	head            bytes.Buffer // the first Write: the rewritten header
	readBeforeWrite int64
	written         int64
	maxLag          int64
	hash            [32]byte
}

func (c *countingSink) Write(p []byte) (int, error) {
	if c.head.Len() == 0 {
		c.readBeforeWrite = c.src.delivered
	}
	c.head.Write(p)
	c.written += int64(len(p))
	return len(p), nil
}

func (c *countingSink) ReadFrom(r io.Reader) (int64, error) {
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var total int64
	base := c.src.delivered - c.written // bytes the rewrite added or removed so far are not lag
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		c.written += int64(n)
		if lag := c.src.delivered - c.written - base; lag > c.maxLag {
			c.maxLag = lag
		}
		if err == io.EOF {
			copy(c.hash[:], h.Sum(nil))
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// A send_as message of 20 MB is rewritten while it streams: nothing but
// the header section is read before the rewritten header is written, and
// the body then flows through with no more than a buffer in between.
func TestSendAsRewriteStreams(t *testing.T) {
	const size = 20 << 20
	src := &source{header: []byte("From: Scanner <scan@dev.lan>\r\nSubject: 20 MB\r\n\r\n"), n: size}
	dst := &countingSink{src: src}
	res, err := rewriteSendAs(dst, src, "scans@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := "From: Scanner <scans@example.com>\r\nReply-To: Scanner <scan@dev.lan>\r\nSubject: 20 MB\r\n\r\n"; dst.head.String() != want {
		t.Errorf("header %q, want %q", dst.head.String(), want)
	}
	if !res.ReplyTo || len(res.Original) != 1 {
		t.Errorf("result %+v", res)
	}
	if dst.readBeforeWrite > transport.MaxHeader+4096 {
		t.Errorf("%d bytes were read before the header was written: the rewrite must only read the header section", dst.readBeforeWrite)
	}
	if dst.maxLag > 4096 {
		t.Errorf("the body lagged %d bytes behind the source: it must stream", dst.maxLag)
	}
	want := sha256.Sum256(bytes.Repeat([]byte{0}, size))
	if dst.hash != want || dst.written != int64(dst.head.Len())+size {
		t.Errorf("body changed: %d bytes written", dst.written)
	}
}

// A header section beyond transport.MaxHeader cannot be rewritten safely
// (a later From could slip through): the message is refused.
func TestSendAsHeaderTooLarge(t *testing.T) {
	big := "From: a@dev.lan\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 70)+"\r\n", 1000) + "\r\nbody\r\n"
	src := &source{header: []byte(big)}
	if _, err := rewriteSendAs(&countingSink{src: src}, src, "scans@example.com"); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err = %v, want errHeaderTooLarge", err)
	}
}

// withSendAs gives the configuration a network client "scanner"
// (127.0.0.2) and makes the AUTH client "app" send as app@example.com too.
func (e *contractEnv) withSendAs() {
	e.t.Helper()
	old := e.state.Load()
	acct := old.Accounts["app@example.com"]
	app := *old.Clients["app"]
	app.SendAs = acct
	st := &State{Hostname: "relay.test", Accounts: old.Accounts, Clients: map[string]*Client{
		"app":     &app,
		"scanner": {Name: "scanner", Group: "g", Allowed: map[string]*Account{acct.Address: acct}, SendAs: acct, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}},
	}}
	st.SetAuthCache(old)
	e.state.Store(st)
}

// A send_as client's messages leave as the account whatever its MAIL FROM
// (null sender included): the envelope and the From header are rewritten,
// after the relay's own Received header.
func TestSendAsSession(t *testing.T) {
	tests := []struct {
		name, src, auth, mailFrom, body, wantHeader string
		code                                        int
		reply, reason                               string // of a refusal
	}{
		{name: "network device", src: "127.0.0.2", mailFrom: "<scanner@dev.lan>", code: 250,
			body:       "From: \"Scanner\" <scanner@dev.lan>\r\nSubject: scan\r\n\r\npage\r\n",
			wantHeader: "From: \"Scanner\" <app@example.com>\r\nReply-To: \"Scanner\" <scanner@dev.lan>\r\nSubject: scan\r\n\r\npage\r\n"},
		{name: "null sender", src: "127.0.0.2", mailFrom: "<>", code: 250,
			body:       "Subject: no From\r\n\r\npage\r\n",
			wantHeader: "Subject: no From\r\nFrom: app@example.com\r\n\r\npage\r\n"},
		{name: "authenticated client", src: "127.0.0.1", auth: "AGFwcABzZWNyZXQtcHc=", mailFrom: "<Whoever@Else.test>", code: 250,
			body:       "From: Someone <whoever@else.test>\r\nReply-To: desk@else.test\r\n\r\nx\r\n",
			wantHeader: "From: Someone <app@example.com>\r\nReply-To: desk@else.test\r\n\r\nx\r\n"},
		{name: "header too large", src: "127.0.0.2", mailFrom: "<scanner@dev.lan>", code: 554,
			body:  "From: a@dev.lan\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 70)+"\r\n", 1000) + "\r\nbody\r\n",
			reply: "5.6.0 Header section too large", reason: "header_too_large"},
		{name: "bare CR hiding a From", src: "127.0.0.2", mailFrom: "<scanner@dev.lan>", code: 554,
			body:  "Subject: scan\rFrom: ceo@example.com\r\nTo: r@x.test\r\n\r\npage\r\n",
			reply: "5.6.0 Header section with a bare CR or NUL", reason: "header_malformed"},
		{name: "NUL in a field", src: "127.0.0.2", mailFrom: "<scanner@dev.lan>", code: 554,
			body:  "Subject: scan\x00\r\n\r\npage\r\n",
			reply: "5.6.0 Header section with a bare CR or NUL", reason: "header_malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newContractEnv(t, false, false)
			e.withSendAs()
			c := e.dialFrom(tc.src)
			e.expect(c, "EHLO scanner.lan", 250)
			if tc.auth != "" {
				e.expect(c, "AUTH PLAIN "+tc.auth, 235)
			}
			e.expect(c, "MAIL FROM:"+tc.mailFrom, 250)
			e.expect(c, "RCPT TO:<r@x.test>", 250)
			msg := e.data(c, tc.body, tc.code)
			if tc.code != 250 {
				if !strings.HasPrefix(msg, tc.reply) {
					t.Errorf("reply %q, want %q…", msg, tc.reply)
				}
				if n := testutil.ToFloat64(e.metrics.refused.WithLabelValues("test", tc.reason)); n != 1 {
					t.Errorf("refusals for %s = %v, want 1", tc.reason, n)
				}
				if len(e.ft.bodies) != 0 {
					t.Errorf("%d messages sent upstream", len(e.ft.bodies))
				}
				return
			}
			if from := e.ft.envs[0].From; from != "app@example.com" {
				t.Errorf("envelope sender %q, want the account", from)
			}
			body := e.ft.bodies[0]
			if !strings.HasPrefix(body, "Received: from scanner.lan") {
				t.Fatalf("body %q does not start with the Received header", body)
			}
			if _, rest, _ := strings.Cut(body, ";\r\n\t"); !strings.HasSuffix(rest, "\r\n"+tc.wantHeader) {
				t.Errorf("message after Received:\n%q\nwant it to end with\n%q", rest, tc.wantHeader)
			}
		})
	}
}
