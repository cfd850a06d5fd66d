package interop

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type tlsMode int

const (
	startTLS    tlsMode = iota // STARTTLS on the submission listener (RFC 3207)
	implicitTLS                // TLS from the first byte (RFC 8314)
)

func (m tlsMode) String() string {
	if m == implicitTLS {
		return "implicit"
	}
	return "starttls"
}

// submission is one message a client is asked to send.
type submission struct {
	id    string // unique per client and case: the Message-ID is <id@interop.test>
	tls   tlsMode
	mech  string // AUTH mechanism: "PLAIN" or "LOGIN"
	from  string
	rcpts []string
	input []byte // the message as the client is given it (file or standard input)
	// eightBit asks the client to declare BODY=8BITMIME (RFC 6152) where
	// it can.
	eightBit bool
	// smtputf8 asks the client to declare SMTPUTF8 (RFC 6531) where it can.
	smtputf8 bool
	dsn      *dsnRequest
	// variant selects a client's own way of sending (curl's --crlf,
	// smtplib's str or EmailMessage); "" is its plain way.
	variant string
	// verbose asks for a protocol transcript (small messages only: some
	// clients print the message too).
	verbose bool
}

// dsnRequest asks for delivery status notifications (RFC 3461).
type dsnRequest struct {
	notify string // NOTIFY=, e.g. "SUCCESS,FAILURE"
	ret    string // RET=: "HDRS" or "FULL"
	envid  string // ENVID=, where the client can send it
}

func (s submission) messageID() string { return "<" + s.id + "@interop.test>" }

// smtpClient is a real SMTP client program driven by the tests.
type smtpClient interface {
	// send submits s through the relay and returns the client's
	// protocol transcript (empty unless s.verbose); it fails the test
	// when the client reports an error.
	send(t *testing.T, s submission) string
	// wire returns the message content the client puts on the wire for
	// s (its own line-ending and final-newline rules applied, before
	// dot-stuffing), or nil for a client that records what it sent
	// itself (see sentReporter).
	wire(s submission) []byte
}

// Optional client capabilities; each check runs where the client offers it.
type (
	// authObserver reads the AUTH mechanism used from a transcript.
	authObserver interface {
		mechanism(transcript string) string
	}
	// pipeliner reads from a transcript whether MAIL, RCPT and DATA were
	// sent as one group (RFC 2920).
	pipeliner interface{ pipelined(transcript string) bool }
	// unwrapper removes what the client adds in front of the message (a
	// relaying MTA's own Received header), asserting it is there.
	unwrapper interface {
		unwrap(t *testing.T, data []byte) []byte
	}
	// waiter is a client that delivers in the background (an MTA,
	// after its sendmail returned): delivered reports when it is done,
	// transcript then returns the protocol dialogue of the delivery.
	waiter interface {
		delivered(t *testing.T, s submission) bool
		transcript(t *testing.T, s submission) string
	}
	// sentReporter returns the content the client itself recorded as
	// sent (smtplib runs inside our script).
	sentReporter interface {
		sent(t *testing.T, s submission) []byte
	}
)

// interopCase is one row of a client's matrix.
type interopCase struct {
	name string
	sub  submission
	// message builds the client's input for the submission's id.
	message func(s submission) []byte
	// pipelining asserts that the client pipelined the transaction.
	pipelining bool
	// declares8Bit asserts that the provider's MAIL command carries
	// BODY=8BITMIME: the client declared it and the relay passed it on.
	declares8Bit bool
	// pending names the unbuilt feature or the relay bug that makes the
	// case skip; it runs once that is done.
	pending string
	// upstream checks the MAIL and RCPT commands the provider received.
	upstream func(t *testing.T, mail string, rcpts []string)
}

// Cases every client supports; each client's file lists its matrix.

func tlsAuthCases() []interopCase {
	var cs []interopCase
	for _, m := range []tlsMode{startTLS, implicitTLS} {
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			cs = append(cs, interopCase{
				name:    fmt.Sprintf("%s/%s", m, strings.ToLower(mech)),
				sub:     submission{tls: m, mech: mech},
				message: basicMessage,
			})
		}
	}
	return cs
}

func pipeliningCase() interopCase {
	return interopCase{
		name:       "pipelining",
		sub:        submission{tls: startTLS, mech: "PLAIN", rcpts: []string{"bob@example.net", "carol@example.org", "dave@example.com"}},
		message:    basicMessage,
		pipelining: true,
	}
}

func eightBitCase(declares bool) interopCase {
	return interopCase{
		name:         "8bitmime",
		sub:          submission{tls: startTLS, mech: "PLAIN", eightBit: true},
		message:      eightBitMessage,
		declares8Bit: declares,
	}
}

// bareLFCase gives the client a message with Unix line endings; wire
// says what the client makes of them.
func bareLFCase() interopCase {
	return interopCase{name: "bare-lf", sub: submission{tls: startTLS, mech: "PLAIN"}, message: lfMessage}
}

func largeCase() interopCase {
	return interopCase{name: "20MB", sub: submission{tls: startTLS, mech: "PLAIN"}, message: largeMessage}
}

// smtputf8Case sends an internationalised recipient and header (RFC 6531,
// RFC 6532); the provider must get SMTPUTF8 on MAIL and the UTF-8 address
// unchanged.
func smtputf8Case() interopCase {
	return interopCase{
		name:    "smtputf8",
		sub:     submission{tls: startTLS, mech: "PLAIN", smtputf8: true, rcpts: []string{"björn@example.net"}},
		message: utf8Message,
		upstream: func(t *testing.T, mail string, rcpts []string) {
			if !hasParam(mail, "SMTPUTF8", "") {
				t.Errorf("provider's MAIL lacks SMTPUTF8: %q", mail)
			}
			if len(rcpts) != 1 || !strings.Contains(rcpts[0], "<björn@example.net>") {
				t.Errorf("provider's RCPT = %q, want the UTF-8 address unchanged", rcpts)
			}
		},
	}
}

// dsnCase asks for DSNs (RFC 3461); the provider must get every
// parameter the client sent. orcpt: the client sends ORCPT.
func dsnCase(d dsnRequest, orcpt bool) interopCase {
	return interopCase{
		name:    "dsn",
		sub:     submission{tls: startTLS, mech: "PLAIN", dsn: &d},
		message: basicMessage,
		upstream: func(t *testing.T, mail string, rcpts []string) {
			if !hasParam(mail, "RET", d.ret) {
				t.Errorf("provider's MAIL lacks RET=%s: %q", d.ret, mail)
			}
			if d.envid != "" && !hasParam(mail, "ENVID", d.envid) {
				t.Errorf("provider's MAIL lacks ENVID=%s: %q", d.envid, mail)
			}
			for _, r := range rcpts {
				if !hasParam(r, "NOTIFY", d.notify) {
					t.Errorf("provider's RCPT lacks NOTIFY=%s: %q", d.notify, r)
				}
				addr := angleAddr.FindStringSubmatch(r)[1]
				if orcpt && !hasParam(r, "ORCPT", "rfc822;"+addr) {
					t.Errorf("provider's RCPT lacks ORCPT=rfc822;%s: %q", addr, r)
				}
			}
		},
	}
}

var angleAddr = regexp.MustCompile(`<([^>]*)>`)

// hasParam reports whether an SMTP command line carries the ESMTP
// parameter key with value ("" for a keyword without one). Keys, and the
// keyword values of NOTIFY and RET, are case-insensitive (RFC 5321
// §4.1.2, RFC 3461 §4); ENVID and ORCPT values are compared exactly.
func hasParam(line, key, value string) bool {
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		if !strings.EqualFold(k, key) {
			continue
		}
		if v == value || (strings.EqualFold(k, "NOTIFY") || strings.EqualFold(k, "RET")) && strings.EqualFold(v, value) {
			return true
		}
	}
	return false
}

// runClient runs a client's matrix against a relay of its own.
func runClient(t *testing.T, r *relay, c smtpClient, name string, cases []interopCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pending != "" {
				t.Skip(tc.pending)
			}
			runCase(t, r, c, name, tc)
		})
	}
	r.assertNoSecrets(t)
}

var caseIDChars = regexp.MustCompile(`[^a-z0-9-]+`)

func runCase(t *testing.T, r *relay, c smtpClient, client string, tc interopCase) {
	s := tc.sub
	s.id = client + "-" + caseIDChars.ReplaceAllString(strings.ToLower(tc.name), "-")
	s.from = account
	if len(s.rcpts) == 0 {
		// The domain names the route, for the MTA clients that route on it.
		s.rcpts = []string{"bob@" + route(s) + ".example.net"}
	}
	s.input = tc.message(s)
	s.verbose = len(s.input) < 1<<20
	before := len(r.sb.SMTP.Commands("MAIL", "RCPT"))

	start := time.Now()
	transcript := c.send(t, s)
	var ready func() bool
	w, background := c.(waiter)
	if background {
		ready = func() bool { return w.delivered(t, s) }
	}
	got := r.message(t, s.messageID(), ready)
	if background {
		transcript = w.transcript(t, s)
	}
	t.Logf("%s: %d bytes delivered in %s", tc.name, len(s.input), time.Since(start).Round(time.Millisecond))

	// Recipients are a set: Postfix sorts them.
	if got.User != account || got.From != s.from || !slices.Equal(slices.Sorted(slices.Values(got.To)), slices.Sorted(slices.Values(s.rcpts))) {
		t.Errorf("provider got a message as %q from %q to %q, want as %q from %q to %q", got.User, got.From, got.To, account, s.from, s.rcpts)
	}
	body := stripRelayReceived(t, got.Data)
	if u, ok := c.(unwrapper); ok {
		body = u.unwrap(t, body)
	}
	sent := c.wire(s)
	if sr, ok := c.(sentReporter); ok {
		sent = sr.sent(t, s)
	}
	assertSameBytes(t, body, relayLineEnds(sent))

	mail, rcpts := upstreamCommands(t, r.sb.SMTP.Commands("MAIL", "RCPT")[before:])
	if len(rcpts) != len(s.rcpts) {
		t.Errorf("provider received %d RCPT commands, want %d: %q", len(rcpts), len(s.rcpts), rcpts)
	}
	if tc.declares8Bit && !hasParam(mail, "BODY", "8BITMIME") {
		t.Errorf("provider's MAIL lacks BODY=8BITMIME: %q", mail)
	}
	if tc.upstream != nil {
		tc.upstream(t, mail, rcpts)
	}
	if o, ok := c.(authObserver); ok && s.verbose {
		if got := o.mechanism(transcript); got != s.mech {
			t.Errorf("client used AUTH %q, want %q; transcript:\n%s", got, s.mech, transcript)
		}
	}
	if p, ok := c.(pipeliner); ok && tc.pipelining && !p.pipelined(transcript) {
		t.Errorf("client did not pipeline MAIL, RCPT and DATA; transcript:\n%s", transcript)
	}
}

// route names the TLS mode and mechanism of a submission.
func route(s submission) string { return s.tls.String() + "-" + strings.ToLower(s.mech) }

// upstreamCommands returns the one MAIL command and the RCPT commands the
// provider received for a message.
func upstreamCommands(t *testing.T, lines []string) (mail string, rcpts []string) {
	t.Helper()
	var mails []string
	for _, l := range lines {
		switch u := strings.ToUpper(l); {
		case strings.HasPrefix(u, "MAIL FROM:"):
			mails = append(mails, l)
		case strings.HasPrefix(u, "RCPT TO:"):
			rcpts = append(rcpts, l)
		}
	}
	if len(mails) != 1 {
		t.Fatalf("provider received %d MAIL commands for one message, want 1: %q", len(mails), mails)
	}
	return mails[0], rcpts
}

// relayReceived is the trace header the relay prepends (README, "How a
// message travels"; RFC 5321 §4.4): the client's EHLO name and address,
// the relay's host name, ESMTPSA (RFC 3848: authenticated, over TLS),
// the message ID and the date.
var relayReceived = regexp.MustCompile(`\AReceived: from [!-~]+ \(\[127\.0\.0\.1\]\)\r\n\tby ` + regexp.QuoteMeta(hostname) + ` \(oauthrelay\) with ESMTPSA id [0-9A-Z]+;\r\n\t([^\r\n]+)\r\n`)

// stripRelayReceived asserts the relay's Received header leads the
// message and returns what follows it.
func stripRelayReceived(t *testing.T, data []byte) []byte {
	t.Helper()
	m := relayReceived.FindSubmatchIndex(data)
	if m == nil {
		t.Fatalf("message does not start with the relay's Received header:\n%q", data[:min(len(data), 400)])
	}
	if _, err := time.Parse(time.RFC1123Z, string(data[m[2]:m[3]])); err != nil {
		t.Errorf("relay's Received header has a bad date: %v", err)
	}
	return data[m[1]:]
}

// relayLineEnds is what the relay makes of a client's message content:
// the relay never sends a bare LF to the provider (RFC 5321 §2.3.8) but
// writes it as CRLF; every other byte passes unchanged.
func relayLineEnds(b []byte) []byte { return crlf(b) }

// crlf turns every LF not preceded by CR into CRLF.
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/64)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// withFinalCRLF appends CRLF unless b ends with it: the CRLF that starts
// "CRLF.CRLF" ends the last line (RFC 5321 §4.1.1.4), so clients add one.
func withFinalCRLF(b []byte) []byte {
	if bytes.HasSuffix(b, []byte("\r\n")) {
		return b
	}
	return append(slices.Clip(b), '\r', '\n')
}

// assertSameBytes compares the received message with the sent one and
// shows where they first differ.
func assertSameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-60)
	t.Errorf("provider received %d bytes, the client sent %d; first difference at byte %d:\n got: %q\nwant: %q",
		len(got), len(want), i, got[from:min(len(got), i+60)], want[from:min(len(want), i+60)])
}

// lookClient finds a client program; a missing one fails the test with
// the Debian package to install (.ci/run installs them all).
func lookClient(t *testing.T, name, pkg string, extraDirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extraDirs {
		p := d + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s not found: install the Debian package %s (apt-get install %s; .ci/run installs it)", name, pkg, pkg)
	return ""
}

// cleanEnv is the environment for client programs: a fresh HOME, so no
// ~/.msmtprc, ~/.curlrc, ~/.swaksrc or ~/.netrc of the machine applies.
func cleanEnv(t *testing.T) []string {
	env := []string{"HOME=" + t.TempDir(), "LC_ALL=C"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}
