package sendas

import (
	"bytes"
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
