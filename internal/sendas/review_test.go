package sendas

import (
	"bytes"
	"net/mail"
	"runtime"
	"strings"
	"testing"
)

// fromAddresses parses the rewritten From field's value as a mailbox-list,
// accepting any charset in encoded-words (the display name is kept byte for
// byte, so its charset does not matter here).
func fromAddresses(t *testing.T, out []byte) ([]string, error) {
	t.Helper()
	fields, _, _, _ := split(out, true)
	for _, f := range fields {
		if !f.is("From") {
			continue
		}
		p := mail.AddressParser{WordDecoder: &mimeAnyCharset}
		list, err := p.ParseList(string(bytes.ReplaceAll(f.value(), []byte("\r\n"), nil)))
		if err != nil {
			return nil, err
		}
		var out []string
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out, nil
	}
	return nil, nil
}

// Review finding: the rewritten From must name the account and nobody
// else. A mailbox whose angle-addr is followed by more text (a second
// angle-addr without a comma, text after '>'), or whose '<' is never
// closed, is rewritten only up to the first '>', so a foreign address
// stays in From (or From is left unparseable). Parsers differ on which
// angle-addr of "<a> <b>" is the author (display-name spoofing, "Composition
// Kills", USENIX Security 2020); the relay's rewrite is what makes the
// provider accept the message as the account, so it must not launder such
// a From.
func TestReviewRewrittenFromIsOnlyTheAccount(t *testing.T) {
	for _, in := range []string{
		"From: Bob <bob@dev.lan> Eve <ceo@example.com>\r\n\r\nx\r\n",
		"From: <bob@dev.lan> <ceo@example.com>\r\n\r\nx\r\n",
		"From: Bob <bob@dev.lan>ceo@example.com\r\n\r\nx\r\n",
		"From: Bob <bob@dev.lan\r\nSubject: s\r\n\r\nx\r\n",
		"From: Bob <bob@dev.lan>>\r\n\r\nx\r\n",
	} {
		out, _, ok := Rewrite([]byte(in), true, acct)
		if !ok {
			t.Fatalf("%q: not ok", in)
		}
		got, err := fromAddresses(t, out)
		if err != nil || len(got) != 1 || got[0] != acct {
			t.Errorf("%q\n  rewritten to %q\n  From parses as %q (%v), want exactly [%s]", in, out, got, err, acct)
		}
	}
}

// Review finding: a bare CR inside the header section is not a line break
// for Rewrite, but it is for some downstream parsers; a From hidden behind
// a bare CR then survives next to the From the relay adds. The header the
// relay hands on must not contain bare CRs (refuse, or treat them as line
// breaks before rewriting).
func TestReviewBareCRInHeader(t *testing.T) {
	in := "Subject: scan\rFrom: ceo@example.com\r\nTo: a@example.net\r\n\r\nbody\r\n"
	out, _, ok := Rewrite([]byte(in), true, acct)
	if !ok {
		return // refusing is fine
	}
	_, _, sep, _ := split(out, true)
	head := out
	if sep != nil {
		head = out[:bytes.Index(out, []byte("\r\n\r\n"))+2]
	}
	for i := 0; i < len(head); i++ {
		if head[i] == '\r' && (i+1 == len(head) || head[i+1] != '\n') {
			t.Fatalf("rewritten header keeps a bare CR before %q: %q", head[i+1:], out)
		}
	}
}

// Stronger invariant than FuzzRewrite's "From contains the account": the
// rewritten From parses to exactly the account.
func FuzzReviewRewriteFromIsOnlyTheAccount(f *testing.F) {
	for _, s := range []string{
		"From: A <a@x>\r\n\r\n", "From: \"q\\\"\" (c (n)) <a@x>, b@y\r\n\r\nb", "From: B <b@x> <c@y>\r\n\r\n",
		"From: a@x (c)\r\n\r\n", "From: =?utf-8?q?x?= <a@x>\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		// Only inputs whose From field net/mail itself accepts: a From the
		// relay could parse must come out as the account alone.
		fields, _, _, complete := split(head, true)
		if !complete {
			return
		}
		for _, fl := range fields {
			if fl.is("From") {
				if _, err := (&mail.AddressParser{WordDecoder: &mimeAnyCharset}).ParseList(string(fl.value())); err != nil {
					return
				}
			}
		}
		out, _, ok := Rewrite(head, true, acct)
		if !ok {
			return
		}
		got, err := fromAddresses(t, out)
		if err != nil || len(got) != 1 || !strings.EqualFold(got[0], acct) {
			t.Fatalf("%q rewritten to %q: From parses as %q (%v)", head, out, got, err)
		}
	})
}

var mimeAnyCharset = mimeWordDecoder()

// Review finding: Rewrite's memory is not proportional to the header it
// was given. A From of 65,000 commas (an empty mailbox each, obsolete
// syntax) makes it allocate ~25 MB for a 64 KiB head — memory outside the
// relay's message budget (server.message_memory_limit), per session, that
// any send_as client can trigger concurrently. Bound: 16x the input.
func TestReviewRewriteMemoryIsBounded(t *testing.T) {
	for _, head := range []string{
		"From: " + strings.Repeat(",", 65000) + "\r\n\r\n",
		"From: " + strings.Repeat("a@b,", 16000) + "\r\n\r\n",
		strings.Repeat("a:\n", 21000) + "\n",
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, _, ok := Rewrite([]byte(head), true, acct); !ok {
			t.Fatal("not ok")
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > uint64(16*len(head)) {
			t.Errorf("%q…: %d bytes of head, %d bytes allocated (%dx)", head[:12], len(head), got, got/uint64(len(head)))
		}
	}
}
