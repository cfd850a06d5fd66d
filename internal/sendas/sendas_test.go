package sendas

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const acct = "scans@example.com"

func TestRewrite(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
		res  Result
	}{
		{
			name: "display name kept, original to Reply-To",
			in:   "Subject: Scan\r\nFrom: Scanner Floor 2 <scanner@printers.lan>\r\nTo: a@example.net\r\n\r\nbody\r\n",
			want: "Subject: Scan\r\nFrom: Scanner Floor 2 <scans@example.com>\r\nReply-To: Scanner Floor 2 <scanner@printers.lan>\r\nTo: a@example.net\r\n\r\nbody\r\n",
			res:  Result{Original: []string{"scanner@printers.lan"}, ReplyTo: true},
		},
		{
			name: "quoted display name with a comma and a folded line",
			in:   "From: \"Doe, Jane\r\n (Accounts)\"\r\n\t<jane@dev.lan>\r\nSubject: x\r\n\r\n",
			want: "From: \"Doe, Jane\r\n (Accounts)\"\r\n\t<scans@example.com>\r\nReply-To: \"Doe, Jane\r\n (Accounts)\"\r\n\t<jane@dev.lan>\r\nSubject: x\r\n\r\n",
			res:  Result{Original: []string{"jane@dev.lan"}, ReplyTo: true},
		},
		{
			name: "encoded-word display name in any charset, byte for byte",
			in:   "From: =?windows-1252?Q?Gr=FC=DFe_vom_Scanner?= <scan@dev.lan>\r\n\r\nx\r\n",
			want: "From: =?windows-1252?Q?Gr=FC=DFe_vom_Scanner?= <scans@example.com>\r\nReply-To: =?windows-1252?Q?Gr=FC=DFe_vom_Scanner?= <scan@dev.lan>\r\n\r\nx\r\n",
			res:  Result{Original: []string{"scan@dev.lan"}, ReplyTo: true},
		},
		{
			name: "existing Reply-To kept",
			in:   "Reply-To: helpdesk@example.com\r\nFrom: MFP <mfp@dev.lan>\r\n\r\n",
			want: "Reply-To: helpdesk@example.com\r\nFrom: MFP <scans@example.com>\r\n\r\n",
			res:  Result{Original: []string{"mfp@dev.lan"}},
		},
		{
			name: "bare address with a comment",
			in:   "from:mfp@dev.lan (Copier)\r\n\r\n",
			want: "from:scans@example.com (Copier)\r\nReply-To:mfp@dev.lan (Copier)\r\n\r\n",
			res:  Result{Original: []string{"mfp@dev.lan"}, ReplyTo: true},
		},
		{
			name: "several mailboxes: the account alone, the originals in Reply-To",
			in:   "From: Alice <a@x.test>, \"Bob\" <b@y.test>\r\nSender: Alice <a@x.test>\r\nSubject: minutes\r\n\r\n",
			want: "From: scans@example.com\r\nReply-To: Alice <a@x.test>, \"Bob\" <b@y.test>\r\nSubject: minutes\r\n\r\n",
			res:  Result{Original: []string{"a@x.test", "b@y.test"}, ReplyTo: true, Removed: 1},
		},
		{
			name: "no From at all",
			in:   "Subject: scan\r\nTo: a@example.net\r\n\r\nbody\r\n",
			want: "Subject: scan\r\nTo: a@example.net\r\nFrom: scans@example.com\r\n\r\nbody\r\n",
			res:  Result{FromAdded: true},
		},
		{
			name: "From already the account",
			in:   "From: Scans <Scans@Example.com>\r\n\r\n",
			want: "From: Scans <scans@example.com>\r\n\r\n",
			res:  Result{Original: []string{"Scans@Example.com"}},
		},
		{
			name: "invalid address inside angle brackets: name kept, no Reply-To",
			in:   "From: HP LaserJet <>\r\n\r\n",
			want: "From: HP LaserJet <scans@example.com>\r\n\r\n",
		},
		{
			name: "no address at all",
			in:   "From: Scanner\r\n\r\n",
			want: "From: scans@example.com\r\n\r\n",
		},
		{
			name: "empty From",
			in:   "From:\r\n\r\n",
			want: "From: scans@example.com\r\n\r\n",
		},
		{
			name: "two From fields: one From left",
			in:   "From: a@x.test\r\nSubject: s\r\nFROM : b@y.test\r\n\r\n",
			want: "From: scans@example.com\r\nReply-To: a@x.test, b@y.test\r\nSubject: s\r\n\r\n",
			res:  Result{Original: []string{"a@x.test", "b@y.test"}, ReplyTo: true, Removed: 1},
		},
		{
			name: "body without an empty line: one is inserted",
			in:   "Subject: scan\r\nscanned page 1\r\nline: 2\r\n",
			want: "Subject: scan\r\nFrom: scans@example.com\r\n\r\nscanned page 1\r\nline: 2\r\n",
			res:  Result{FromAdded: true},
		},
		{
			name: "no header at all",
			in:   "hello\r\n",
			want: "From: scans@example.com\r\n\r\nhello\r\n",
			res:  Result{FromAdded: true},
		},
		{
			name: "message that is all header",
			in:   "From: a@x.test\r\nSubject: s\r\n",
			want: "From: scans@example.com\r\nReply-To: a@x.test\r\nSubject: s\r\n",
			res:  Result{Original: []string{"a@x.test"}, ReplyTo: true},
		},
		{
			name: "bare LF line endings",
			in:   "From: a@x.test\nSubject: s\n\nbody\n",
			want: "From: scans@example.com\nReply-To: a@x.test\nSubject: s\n\nbody\n",
			res:  Result{Original: []string{"a@x.test"}, ReplyTo: true},
		},
		{
			name: "quoted local part with an angle bracket in it",
			in:   "From: Lab <\"lab>printer\"@dev.lan>\r\n\r\n",
			want: "From: Lab <scans@example.com>\r\nReply-To: Lab <\"lab>printer\"@dev.lan>\r\n\r\n",
			res:  Result{Original: []string{"\"lab>printer\"@dev.lan"}, ReplyTo: true},
		},
		{
			name: "comment after the angle-addr: kept",
			in:   "From: Bob <bob@dev.lan> (desk 2)\r\n\r\n",
			want: "From: Bob <scans@example.com> (desk 2)\r\nReply-To: Bob <bob@dev.lan> (desk 2)\r\n\r\n",
			res:  Result{Original: []string{"bob@dev.lan"}, ReplyTo: true},
		},
		{
			name: "second angle-addr after the first: the account alone",
			in:   "From: Bob <bob@dev.lan> Eve <ceo@example.com>\r\n\r\n",
			want: "From: scans@example.com\r\n\r\n",
		},
		{
			name: "address text after the angle-addr: the account alone",
			in:   "From: Bob <bob@dev.lan>ceo@example.com\r\n\r\n",
			want: "From: scans@example.com\r\n\r\n",
		},
		{
			name: "'<' never closed: the account alone",
			in:   "From: Bob <bob@dev.lan\r\nSubject: s\r\n\r\n",
			want: "From: scans@example.com\r\nSubject: s\r\n\r\n",
		},
		{
			name: "display name that is an address: the rewrite would not parse, the account alone",
			in:   "From: ceo@example.com <bob@dev.lan>\r\n\r\n",
			want: "From: scans@example.com\r\n\r\n",
		},
		{
			name: "only the mailboxes that parse go to Reply-To",
			in:   "From: a@x.test, <b@y.test, c@z.test\r\n\r\n",
			want: "From: scans@example.com\r\nReply-To: a@x.test\r\n\r\n",
			res:  Result{Original: []string{"a@x.test"}, ReplyTo: true},
		},
		{
			name: "empty elements are no mailboxes",
			in:   "From: ,, Bob <bob@dev.lan> ,,\r\n\r\n",
			want: "From: Bob <scans@example.com> \r\nReply-To: Bob <bob@dev.lan> \r\n\r\n",
			res:  Result{Original: []string{"bob@dev.lan"}, ReplyTo: true},
		},
		{
			name: "a line longer than any field name starts the body",
			in:   "Subject: s\r\n" + strings.Repeat("A", 999) + ": x\r\n",
			want: "Subject: s\r\nFrom: scans@example.com\r\n\r\n" + strings.Repeat("A", 999) + ": x\r\n",
			res:  Result{FromAdded: true},
		},
		{
			name: "a From look-alike in the body is not touched",
			in:   "Subject: s\r\n\r\nFrom: someone@else.test\r\n",
			want: "Subject: s\r\nFrom: scans@example.com\r\n\r\nFrom: someone@else.test\r\n",
			res:  Result{FromAdded: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res, ok := Rewrite([]byte(tc.in), true, acct)
			if !ok {
				t.Fatal("not ok")
			}
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			if diff := cmp.Diff(tc.res, res); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

// Rewrite refuses a head that ends inside the header section: the rest
// of the header could hold another From.
func TestRewriteNeedsTheWholeHeader(t *testing.T) {
	for _, head := range []string{
		"From: a@x.test\r\nSubject: s\r\n",     // more may follow
		"From: a@x.test\r\nSubject: a long li", // a partial line
	} {
		if _, _, ok := Rewrite([]byte(head), false, acct); ok {
			t.Errorf("%q: rewritten although the header section may go on", head)
		}
	}
	// Once the body has started the head is complete, whatever follows.
	got, _, ok := Rewrite([]byte("Subject: s\r\n\r\nbody that goes o"), false, acct)
	if !ok || string(got) != "Subject: s\r\nFrom: scans@example.com\r\n\r\nbody that goes o" {
		t.Errorf("%q %v", got, ok)
	}
}

// Rewrite refuses a header section with a bare CR or a NUL: parsers
// disagree on where such a line ends, so a From could hide behind one.
// Malformed tells that refusal from a header too large.
func TestRewriteRefusesBareCRAndNUL(t *testing.T) {
	tests := []struct {
		name, head string
		malformed  bool
	}{
		{"bare CR inside a field", "Subject: scan\rFrom: ceo@example.com\r\n\r\nbody\r\n", true},
		{"bare CR in a folded From", "From: Bob\r\n <b@x>\r\r\n\r\n", true},
		{"NUL in a field", "Subject: a\x00b\r\n\r\n", true},
		{"bare CR in the empty line", "Subject: s\r\n\r\r\nbody\r\n", true},
		{"bare CR ending the message", "Subject: s\r", true},
		{"bare CR in the body is the body's", "Subject: s\r\n\r\nbo\rdy\x00\r\n", false},
		{"bare LF lines are lines", "Subject: s\nFrom: a@x\n\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, ok := Rewrite([]byte(tc.head), true, acct)
			if ok == tc.malformed {
				t.Errorf("Rewrite ok = %v, want %v", ok, !tc.malformed)
			}
			if got := Malformed([]byte(tc.head), true); got != tc.malformed {
				t.Errorf("Malformed = %v, want %v", got, tc.malformed)
			}
		})
	}
	if Malformed([]byte("From: a@x\r\nSubject: a long li"), false) {
		t.Error("an incomplete header without bare CR reported malformed")
	}
}

// Rewrite looks at no more than maxMailboxes From mailboxes: a From of
// more is several mailboxes (the account alone), and Reply-To and the log
// get the first ones.
func TestRewriteBoundsMailboxes(t *testing.T) {
	var list []string
	for i := range maxMailboxes + 50 {
		list = append(list, fmt.Sprintf("d%d@dev.lan", i))
	}
	out, res, ok := Rewrite([]byte("From: "+strings.Join(list, ",")+"\r\n\r\n"), true, acct)
	if !ok {
		t.Fatal("not ok")
	}
	want := "From: scans@example.com\r\nReply-To: " + strings.Join(list[:maxMailboxes], ",") + "\r\n\r\n"
	if string(out) != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
	if len(res.Original) != maxMailboxes {
		t.Errorf("%d original addresses logged, want %d", len(res.Original), maxMailboxes)
	}
}

// Parsing From (net/mail) allocates tens of bytes per byte of a quoted
// display name or of many words: Rewrite parses no more than maxParsed
// bytes of it, so a 64 KiB display name costs no more than a short one
// would cost times a constant, and becomes the account alone.
func TestRewriteLongMailboxes(t *testing.T) {
	for _, tc := range []struct{ head, want string }{
		{"From: \"" + strings.Repeat("n", 65000) + "\" <a@dev.lan>\r\n\r\n", "From: scans@example.com\r\n\r\n"},
		{"From: " + strings.Repeat("n ", 32000) + "<a@dev.lan>\r\n\r\n", "From: scans@example.com\r\n\r\n"},
		{"From: " + strings.Repeat("\"Device "+strings.Repeat("n", 600)+"\" <d@dev.lan>,", 100) + "\r\n\r\n", ""},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		out, res, ok := Rewrite([]byte(tc.head), true, acct)
		runtime.ReadMemStats(&after)
		if !ok {
			t.Fatal("not ok")
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > uint64(16*len(tc.head)) {
			t.Errorf("%.20q…: %d bytes of head, %d bytes allocated", tc.head, len(tc.head), got)
		}
		if tc.want != "" && string(out) != tc.want {
			t.Errorf("got %.80q…", out)
		}
		if len(res.Original) > maxParsed/600 {
			t.Errorf("%d mailboxes parsed, more than maxParsed allows", len(res.Original))
		}
	}
}

// A head that ends inside a line which cannot be a field any more (longer
// than any field name, or with a character no field name has) holds the
// whole header section: the body started without an empty line.
func TestRewritePartialBodyLine(t *testing.T) {
	for _, tc := range []struct {
		head string
		ok   bool
	}{
		{"Subject: s\r\n" + strings.Repeat("A", 999), true},
		{"Subject: s\r\nno field, a sentence", true},
		{"Subject: s\r\n" + strings.Repeat("A", 998), false},          // could still be a field name
		{"Subject: s\r\nX-Long: " + strings.Repeat("v", 2000), false}, // a field, partly read
		{"Subject: s\r\n\t" + strings.Repeat("v", 2000), false},       // a continuation, partly read
	} {
		out, _, ok := Rewrite([]byte(tc.head), false, acct)
		if ok != tc.ok {
			t.Errorf("%.30q…: ok = %v, want %v", tc.head, ok, tc.ok)
			continue
		}
		if ok {
			body := tc.head[len("Subject: s\r\n"):]
			if want := "Subject: s\r\nFrom: scans@example.com\r\n\r\n" + body; string(out) != want {
				t.Errorf("got %.80q", out)
			}
		}
	}
}

func FuzzRewrite(f *testing.F) {
	for _, s := range []string{
		"From: A <a@x>\r\n\r\n", "From: \"q\\\"\" (c (n)) <a@x>, b@y\r\n\r\nb", "From: <\r\n\r\n", "From: (\r\n\r\n", "From: \"\r\n\r\n",
		"Sender: x\r\nReply-To: y\r\n\r\n", " cont\r\nFrom: a@x\r\n", "From: a@x\n", "From: ,,\r\n\r\n",
	} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, head []byte, atEOF bool) {
		out, _, ok := Rewrite(head, atEOF, acct)
		if !ok {
			return
		}
		fields, _, _, complete := split(out, true)
		if !complete {
			t.Fatalf("output header incomplete: %q", out)
		}
		froms := 0
		for _, fl := range fields {
			if fl.is("From") {
				froms++
				if !bytes.Contains(fl.raw, []byte(acct)) {
					t.Fatalf("From without the account: %q", fl.raw)
				}
			}
			if fl.is("Sender") {
				t.Fatalf("Sender left: %q", out)
			}
		}
		if froms != 1 {
			t.Fatalf("%d From fields in %q", froms, out)
		}
	})
}
