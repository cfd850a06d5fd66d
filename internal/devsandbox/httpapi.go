package devsandbox

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/mail"
	"strings"
	"sync"
)

// Helpers shared by the sandbox's HTTP mail APIs (graph.go, gmailapi.go):
// bearer tokens, and the header work both providers do on a submitted MIME
// message (recipients from To/Cc/Bcc, Bcc removed from what is delivered).

// tokenState is what the token endpoint knows of a presented access token.
type tokenState int

const (
	tokenMissing tokenState = iota
	tokenUnknown
	tokenExpired
	tokenValid
)

// bearerToken returns the token of an "Authorization: Bearer" header (the
// scheme is case-insensitive, RFC 6750 §2.1 and RFC 9110 §11.1).
func bearerToken(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// inspect returns the grant of an access token and whether it is unknown,
// expired or valid: the APIs answer an expired token differently from a
// forged one, as the providers do.
func (ts *TokenServer) inspect(token string) (AccessGrant, tokenState) {
	if token == "" {
		return AccessGrant{}, tokenMissing
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	g, ok := ts.access[token]
	switch {
	case !ok:
		return AccessGrant{}, tokenUnknown
	case !ts.now().Before(g.Expiry):
		return g, tokenExpired
	}
	return g, tokenValid
}

// hasScope reports whether the space-separated scope list grants one of
// wanted.
func hasScope(scopes string, wanted ...string) bool {
	for _, s := range strings.Fields(scopes) {
		for _, w := range wanted {
			if s == w {
				return true
			}
		}
	}
	return false
}

// submission is a MIME message as an HTTP mail API received it, reduced to
// what it delivers: the recipients of its To, Cc and Bcc headers and the
// message without its Bcc header.
type submission struct {
	from       string // address of the From header, "" if none
	recipients []string
	subject    string
	data       []byte // as delivered: Bcc removed, Message-ID added if missing
}

var (
	errNoHeader     = errors.New("the message has no header section")
	errBadAddresses = errors.New("a recipient header does not parse as an address list")
)

// parseSubmission parses a submitted message. Both Graph and the Gmail API
// take the recipients from the To, Cc and Bcc headers (RFC 5322 §3.6.3),
// send one copy per distinct address, and deliver the message without its
// Bcc field; both give a message without a Message-ID one.
func parseSubmission(raw []byte, idDomain string) (submission, error) {
	raw = canonicalCRLF(raw)
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return submission{}, errNoHeader
	}
	var sub submission
	seen := map[string]bool{}
	for _, field := range []string{"To", "Cc", "Bcc"} {
		if msg.Header.Get(field) == "" {
			continue
		}
		list, err := msg.Header.AddressList(field)
		if err != nil {
			return submission{}, errBadAddresses
		}
		for _, a := range list {
			if key := strings.ToLower(a.Address); !seen[key] {
				seen[key] = true
				sub.recipients = append(sub.recipients, a.Address)
			}
		}
	}
	if from, err := msg.Header.AddressList("From"); err == nil && len(from) > 0 {
		sub.from = from[0].Address
	}
	sub.subject = subjectOf(raw)
	sub.data = removeHeaderField(raw, "Bcc")
	if msg.Header.Get("Message-Id") == "" {
		sub.data = append([]byte("Message-ID: <"+randomHex(12)+"@"+idDomain+">\r\n"), sub.data...)
	}
	return sub, nil
}

// canonicalCRLF turns bare LF line ends into CRLF (RFC 5322 §2.1), the
// form the sandbox stores, as its SMTP server receives it.
func canonicalCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) || bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// removeHeaderField drops every instance of a header field, with its folded
// continuation lines (RFC 5322 §2.2.3), from the header section of raw.
func removeHeaderField(raw []byte, name string) []byte {
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(raw)
	} else {
		end += 2
	}
	var out bytes.Buffer
	dropping := false
	for _, line := range bytes.SplitAfter(raw[:end], []byte("\r\n")) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !dropping {
				out.Write(line)
			}
			continue
		}
		fieldName, _, _ := bytes.Cut(line, []byte(":"))
		dropping = strings.EqualFold(strings.TrimSpace(string(fieldName)), name)
		if !dropping {
			out.Write(line)
		}
	}
	out.Write(raw[end:])
	return out.Bytes()
}

// mailboxDoor counts the requests of each mailbox in flight, refuses
// those beyond max (0: no limit), and holds admitted ones while a test
// asks it to (HoldRequests), for the Graph and Gmail API endpoints.
type mailboxDoor struct {
	mu       sync.Mutex
	max      int
	inFlight map[string]int
	peak     map[string]int
	hold     chan struct{}
}

func newMailboxDoor(max int) *mailboxDoor {
	return &mailboxDoor{max: max, inFlight: map[string]int{}, peak: map[string]int{}}
}

func (d *mailboxDoor) setMax(n int) {
	d.mu.Lock()
	d.max = n
	d.mu.Unlock()
}

// enter admits a request for mailbox unless max are in flight; leave
// ends it. held is the hold in force when it entered (nil: none).
func (d *mailboxDoor) enter(mailbox string) (leave func(), held chan struct{}, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.max > 0 && d.inFlight[mailbox] >= d.max {
		return nil, nil, false
	}
	d.inFlight[mailbox]++
	d.peak[mailbox] = max(d.peak[mailbox], d.inFlight[mailbox])
	return func() { d.mu.Lock(); d.inFlight[mailbox]--; d.mu.Unlock() }, d.hold, true
}

// waitWhileHeld waits until held is released; false when the client went away
// meanwhile.
func waitWhileHeld(held chan struct{}, r *http.Request) bool {
	if held == nil {
		return true
	}
	select {
	case <-held:
		return true
	case <-r.Context().Done():
		return false
	}
}

// holdRequests makes admitted requests wait, counted as in flight, until
// release is called.
func (d *mailboxDoor) holdRequests() (release func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.hold = ch
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			if d.hold == ch {
				d.hold = nil
			}
			d.mu.Unlock()
			close(ch)
		})
	}
}

// counts returns the requests for mailbox in flight and the most there
// were at once.
func (d *mailboxDoor) counts(mailbox string) (inFlight, peak int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mailbox = strings.ToLower(mailbox)
	return d.inFlight[mailbox], d.peak[mailbox]
}

// readLimited reads a request body of at most limit bytes. A larger body
// is read on (up to a bound) and discarded before the caller answers 413,
// so that the client sees the answer rather than a reset connection.
func readLimited(r *http.Request, limit int64) (body []byte, tooLarge bool, err error) {
	body, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(body)) <= limit {
		return body, false, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 256<<20))
	return nil, true, nil
}

// failures holds the error answers a test scripts per mailbox: those of
// failNext in order, then the one of failAlways. Graph and the Gmail API
// share it; E is each one's error type.
type failures[E any] struct {
	mu     sync.Mutex
	next   map[string][]E
	always map[string]E
}

func newFailures[E any]() *failures[E] {
	return &failures[E]{next: map[string][]E{}, always: map[string]E{}}
}

func (f *failures[E]) failNext(mailbox string, errs ...E) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mailbox = strings.ToLower(mailbox)
	f.next[mailbox] = append(f.next[mailbox], errs...)
}

func (f *failures[E]) failAlways(mailbox string, e *E) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mailbox = strings.ToLower(mailbox)
	if e == nil {
		delete(f.always, mailbox)
		return
	}
	f.always[mailbox] = *e
}

// take returns the scripted answer of a request for mailbox, if any.
func (f *failures[E]) take(mailbox string) (E, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.next[mailbox]; len(q) > 0 {
		f.next[mailbox] = q[1:]
		return q[0], true
	}
	e, ok := f.always[mailbox]
	return e, ok
}
